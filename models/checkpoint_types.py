"""What a checkpoint may hold besides tensors and plain data, for loading it without running its code.

``torch.load(weights_only=True)`` rebuilds tensors, containers and numbers and refuses every
other object a pickle names (a pickled object names a function that unpickling calls: that is how
a ``.ckpt`` file runs code). Checkpoints of this framework need nothing more: their configs are
stored as plain data. Lightning checkpoints of the original framework (pytorch-lightning 1.3,
sacred) name a few more, which load here as inert stand-ins (never the named classes):

* ``munch.Munch`` / ``munch.DefaultMunch``: the experiment config under ``hyper_parameters``
  (``save_hyperparameters`` of a ``DefaultMunch``): loaded as a plain dict (:class:`MunchConfig`);
* ``sacred.config_helpers.CMD``: command strings inside that config: loaded as ``str``;
* ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``: Lightning 1.3 keyed each
  callback's state by its class: loaded as :class:`LegacyCallbackKey`, a class that does nothing.

:func:`unsafe_globals` names what a refused file holds beyond these, for the error message.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch


class MunchConfig:
    """Stands for ``munch.Munch`` / ``munch.DefaultMunch``: unpickling makes a ``Counter`` of its items.

    A munch is a dict subclass pickled with a state; torch's weights-only unpickler fills only
    exact dicts, ``OrderedDict``s and ``Counter``s, and sets a state only on allowlisted types. A
    ``Counter`` (allowlisted by torch) takes both; :func:`load_weights_only` turns it into a dict.
    """

    def __new__(cls, *args: Any) -> Counter:  # type: ignore[misc]
        return Counter()


class LegacyCallbackKey:
    """Stands for the callback class that Lightning 1.3 keyed a callback's saved state with."""


#: ``(stand-in, the global a checkpoint names)`` for ``torch.serialization.safe_globals``
LEGACY_GLOBALS: list[tuple[Any, str]] = [
    (MunchConfig, "munch.Munch"),
    (MunchConfig, "munch.DefaultMunch"),
    (str, "sacred.config_helpers.CMD"),
    (LegacyCallbackKey, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
]


def _munches_as_dicts(obj: Any, done: dict[int, tuple[Any, Any]] | None = None) -> Any:
    """``obj`` with every ``Counter`` in it (a munch, see :class:`MunchConfig`) a plain dict.

    Containers are changed in place (tuples rebuilt where they hold one), so what the pickle
    shares stays shared; each object is converted once (``done``: id -> (object, result), the
    object kept so that its id stays its own).
    """
    done = {} if done is None else done
    if not isinstance(obj, dict | list | tuple):
        return obj
    if id(obj) in done:
        return done[id(obj)][1]
    if isinstance(obj, Counter):
        result: dict = {}
        done[id(obj)] = (obj, result)
        result.update((k, _munches_as_dicts(v, done)) for k, v in obj.items())
        return result
    done[id(obj)] = (obj, obj)
    if isinstance(obj, tuple):
        items = tuple(_munches_as_dicts(v, done) for v in obj)
        if any(a is not b for a, b in zip(items, obj, strict=True)):
            done[id(obj)] = (obj, items)
            return items
        return obj
    for key, value in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
        new = _munches_as_dicts(value, done)
        if new is not value:
            obj[key] = new
    return obj


def load_weights_only(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load`` on the CPU that rebuilds only tensors, plain data and :data:`LEGACY_GLOBALS`.

    ``mmap``: tensors stay in the file until read (cheap when only the plain data is wanted); files
    in torch's old, non-zip format are read whole.
    Raises ``pickle.UnpicklingError`` when the file names anything else (see :func:`unsafe_globals`).
    """
    with torch.serialization.safe_globals(LEGACY_GLOBALS):
        try:
            return _munches_as_dicts(torch.load(path, map_location="cpu", weights_only=True, mmap=mmap))
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):
                raise
            return _munches_as_dicts(torch.load(path, map_location="cpu", weights_only=True))


_NAMED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")


def unsafe_globals(path: str | Path, error: pickle.UnpicklingError) -> list[str]:
    """The functions and classes that made :func:`load_weights_only` refuse ``path`` (empty when
    the refusal named none: a damaged file, or pickle instructions torch does not rebuild)."""
    names: set[str] = set()
    if zipfile.is_zipfile(path):  # torch.save's format: every name in the pickle, not just the first
        try:
            with torch.serialization.safe_globals(LEGACY_GLOBALS):
                names.update(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except (pickle.UnpicklingError, ValueError, RuntimeError, EOFError):
            pass  # instructions the scan does not know: the error message names the first global
    names.update(_NAMED_GLOBAL.findall(str(error)))
    # the message spells builtins without their module
    return sorted({f"builtins.{n}" if "." not in n else n for n in names})

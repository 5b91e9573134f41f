"""The random draws of a clip's waveform augmentations, by name: drawn, recorded, replayed or neutral.

Every random choice the waveform augmentations make for an item goes through :func:`value` with
a name: ``crop`` (offset of a random crop), ``gain_db``, ``roll``, ``wavmix`` (whether the clip
is mixed), ``partner`` (the dataset index of the clip mixed in), ``lam`` (its weight), and the
partner's own ``partner.crop``, ``partner.gain_db``, ``partner.roll``. What :func:`value` does
depends on the context of the process:

* none (training as usual): it draws, as the augmentation always did (the same generator, the
  same calls: runs without a context are unchanged);
* :func:`recording`: it draws and writes the value into a :class:`Tape`;
* :func:`replaying`: it returns the value a tape recorded (a missing one is an error), so the
  item is exactly the one recorded;
* :func:`neutral`: it returns the value that leaves the clip unchanged (no gain, no shift, no
  mix, the crop at the start): the clean clip.

Consistent teaching (:mod:`helpers.data.teacher_data`) records the draws that made the input a
teacher saw and replays them when the student trains. Notes that are not draws (the name of the
clip actually mixed in) go to the tape with :func:`note`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Tape", "ReplayMismatch", "value", "note", "scope", "recording", "replaying", "neutral", "active"]


class ReplayMismatch(RuntimeError):
    """A replayed item asked for a draw the tape does not hold, or left a recorded draw unused."""


@dataclass
class Tape:
    """The named values drawn for one item (``values``) and notes about it (``notes``)."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Context:
    mode: str  # "record", "replay", "neutral"
    tape: Tape
    prefix: str = ""
    used: set[str] = field(default_factory=set)


_context: _Context | None = None


def active() -> str | None:
    """The mode of this process' context (``record``, ``replay``, ``neutral``), or None."""
    return _context.mode if _context is not None else None


def value(name: str, draw: Callable[[], Any], neutral: Any) -> Any:
    """The value of the draw ``name``: ``draw()`` (and recorded), the recorded one, or ``neutral``."""
    ctx = _context
    if ctx is None:
        return draw()
    key = ctx.prefix + name
    if ctx.mode == "neutral":
        return neutral
    if ctx.mode == "replay":
        if key not in ctx.tape.values:
            raise ReplayMismatch(f"the augmentation draws '{key}', which the recording does not hold: the "
                                 f"training's augmentations differ from those recorded (recorded: "
                                 f"{sorted(ctx.tape.values)})")
        ctx.used.add(key)
        return ctx.tape.values[key]
    result = draw()
    ctx.tape.values[key] = result
    return result


def note(name: str, what: Any) -> None:
    """Write a note (not a draw) into the tape being recorded or replayed; ignored otherwise."""
    if _context is not None and _context.mode != "neutral":
        _context.tape.notes[_context.prefix + name] = what


@contextlib.contextmanager
def scope(prefix: str) -> Iterator[None]:
    """Names drawn inside get ``prefix`` (``partner.``: the draws of the clip mixed in)."""
    global _context
    if _context is None:
        yield
        return
    previous = _context.prefix
    _context.prefix = previous + prefix
    try:
        yield
    finally:
        _context.prefix = previous


@contextlib.contextmanager
def _enter(ctx: _Context) -> Iterator[_Context]:
    global _context
    if _context is not None:
        raise RuntimeError("augmentation draws are already being recorded or replayed in this process")
    _context = ctx
    try:
        yield ctx
    finally:
        _context = None


@contextlib.contextmanager
def recording() -> Iterator[Tape]:
    """Draw as usual and record every draw: ``with recording() as tape: item = dataset[i]``."""
    with _enter(_Context("record", Tape())) as ctx:
        yield ctx.tape


@contextlib.contextmanager
def replaying(values: dict[str, Any]) -> Iterator[Tape]:
    """Return the recorded ``values`` instead of drawing; every one of them must be used."""
    with _enter(_Context("replay", Tape(values=dict(values)))) as ctx:
        yield ctx.tape
        unused = set(ctx.tape.values) - ctx.used
        if unused:
            raise ReplayMismatch(f"recorded draws {sorted(unused)} were not used: the training's augmentations "
                                 f"differ from those recorded")


@contextlib.contextmanager
def neutral() -> Iterator[Tape]:
    """Every draw takes its neutral value: the clip as it is (no gain, shift or mix; cropped at its start)."""
    with _enter(_Context("neutral", Tape())) as ctx:
        yield ctx.tape

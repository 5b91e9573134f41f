"""Lightning's checkpoint writing and reading, made safe against kills, full disks and damaged files.

:class:`AtomicCheckpointIO` replaces Lightning's ``TorchCheckpointIO``:

* saving streams ``torch.save`` into ``<file>.partial`` next to the checkpoint, flushes it to the
  disk and renames it (:func:`helpers.data.atomic.atomic_write`): a kill at any moment leaves the
  previous checkpoint valid. (Lightning's own writer serialises the whole checkpoint in memory,
  writes it to the system temp folder and moves it; where that folder is another file system the
  move is a copy into the checkpoint itself, and a full ``/tmp`` fails the save.)
* a save that fails (disk full, quota) raises :class:`CheckpointSaveError` naming the file, the
  cause and the resume command; the previous checkpoint of that name is intact.
* saving does not stall the step loop: the checkpoint is copied to host memory and written by a
  background thread, in order, one at a time (:mod:`helpers.training.checkpoint_writer`; a failed
  write is raised at the next save or when training ends). ``background=False`` writes in the
  calling thread.
* loading a file that is truncated or corrupt raises :class:`models.checkpoints.CheckpointError`
  naming the file, instead of a bare unpickling error (Lightning does not silently start afresh
  either, but its message does not say which file or what to do).
* loading (resuming with ``ckpt_path=``) runs no code from the file: it is read with
  :func:`models.checkpoints.read_checkpoint`, which rebuilds tensors and plain data only (all a
  run's state is: weights, SWA average, optimizer, LR schedule, loop counters, callback states
  such as the sampler position) and refuses anything else, naming it, unless the plugin was
  made with ``trust_checkpoint=True``. Lightning's ``weights_only`` argument is not consulted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from helpers.data.atomic import WriteFailedError, atomic_write
from helpers.training.checkpoint_writer import BackgroundWriter, host_copy
from models.checkpoints import CheckpointError, UnsafeCheckpointError, read_checkpoint


class CheckpointSaveError(WriteFailedError):
    """A checkpoint could not be written; the previous file of that name is intact."""


def write_checkpoint(checkpoint: dict[str, Any], path: Any) -> None:
    """``torch.save`` through :func:`atomic_write`; a failure raises :class:`CheckpointSaveError`."""
    try:
        with atomic_write(path) as f:
            torch.save(checkpoint, f)
    except WriteFailedError as err:
        resume = os.path.join(os.path.dirname(os.path.abspath(path)), "last.ckpt")
        raise CheckpointSaveError(err.errno, f"{err.strerror}. Training stops here; free some space, then "
                                  f"resume with ckpt_path={resume}") from None  # the message has the cause


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic, durable saves off the step loop, loads that run no code from
    the file (``trust_checkpoint=True``: a full unpickle, for files the user vouches for), and
    loading errors that name the file."""

    def __init__(self, trust_checkpoint: bool = False, background: bool = True) -> None:
        super().__init__()
        self.trust_checkpoint = trust_checkpoint
        self.writer = BackgroundWriter() if background else None
        self._snapshot: dict[str, Any] | None = None  # the last copy written, reused by the next save

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        if self.writer is None:
            write_checkpoint(checkpoint, path)
            return
        self.writer.wait()  # one write at a time: one copy of the checkpoint in memory, reused
        snapshot = self._snapshot = host_copy(checkpoint, reuse=self._snapshot)
        self.writer.submit(lambda: write_checkpoint(snapshot, path))

    def wait(self) -> None:
        """Until every checkpoint asked for is on the disk; raises a failed write."""
        if self.writer is not None:
            self.writer.wait()

    def teardown(self) -> None:
        self.wait()
        self._snapshot = None

    def load_checkpoint(self, path: Any, map_location: Callable | Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        self.wait()  # a checkpoint still being written
        try:
            return dict(read_checkpoint(path, trust_checkpoint=self.trust_checkpoint))
        except UnsafeCheckpointError:
            raise  # its message says what to do
        except CheckpointError as err:
            raise CheckpointError(
                f"{err} It cannot be resumed from; resume from an earlier checkpoint of the run instead "
                f"(ckpt_path=<run folder>/checkpoints/best-*.ckpt), or start afresh without ckpt_path.") from None

    def remove_checkpoint(self, path: Any) -> None:
        def remove() -> None:
            if os.path.exists(path):
                os.remove(path)

        if self.writer is None:
            remove()
        else:
            self.writer.submit(remove)  # after the writes asked for before it

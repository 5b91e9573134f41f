"""Checkpoints written beside training: the step loop waits only for a copy of the state in host memory.

A PaSST-S checkpoint with its SWA copy and AdamW state is ~1.4 GB; serialising it, writing it
and flushing it to the disk takes seconds (more on a network file system), and under DDP every
rank waits for rank 0 at the barrier that follows each save. :class:`BackgroundWriter` runs the
writes on one thread, in the order they were asked for:

* :func:`host_copy` first copies every tensor of the checkpoint to host memory (one device copy
  on a GPU, a memory copy on the CPU), into the buffers of the previous save once that is
  written, so training can change the weights while the copy is written: the file holds the
  state of the step that asked for it;
* one write at a time: a save asked for while the previous one is still being written waits for
  it (at most one extra copy of the checkpoint in memory);
* removals (Lightning deleting a superseded best checkpoint) queue behind the writes;
* a write that fails is raised in the training thread at the next save, at :meth:`wait` (before
  a checkpoint is read, and when training ends, also after an error), never lost.

The atomic guarantees stay those of :func:`helpers.data.atomic.atomic_write` (the write itself
is the same): a kill at any moment leaves the previous file of that name intact.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import torch


def host_copy(value: Any, reuse: Any = None) -> Any:
    """``value`` with every tensor copied to host memory; dicts, lists and tuples rebuilt, other values shared.

    ``reuse``: an earlier copy of a checkpoint of the same layout (the previous save, written by
    now): its tensors of the same shape and dtype are overwritten instead of allocating new ones
    (fresh host memory costs a page fault per 4 kB: seconds for a PaSST-S checkpoint).
    """
    if isinstance(value, torch.Tensor):
        if (isinstance(reuse, torch.Tensor) and reuse.shape == value.shape and reuse.dtype == value.dtype
                and reuse.device.type == "cpu"):
            return reuse.copy_(value.detach())
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        reuse = reuse if isinstance(reuse, dict) else {}
        return type(value)((k, host_copy(v, reuse.get(k))) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        reuse = reuse if isinstance(reuse, (list, tuple)) and len(reuse) == len(value) else [None] * len(value)
        items = [host_copy(v, r) for v, r in zip(value, reuse, strict=True)]
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


class BackgroundWriter:
    """Runs jobs (writes, removals) one at a time on a daemon thread, in order (module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` after the jobs submitted before it; raises a failure of an earlier job first."""
        self.raise_failure()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def wait(self) -> None:
        """Return when every submitted job has finished; raises the first failure (once)."""
        self._jobs.join()
        self.raise_failure()

    def raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if self._failure is None:  # after a failure, training stops: nothing more is written
                    job()
            except BaseException as err:  # noqa: BLE001 -- handed to the training thread
                self._failure = err
            finally:
                self._jobs.task_done()

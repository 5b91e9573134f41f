"""A dead, silent or failed rank ends every rank of a run within seconds, whatever launched them.

A collective fails fast only when its transport notices the dead peer: gloo and NCCL over sockets
do at once; NCCL inside one machine (NVLink, shared memory) waits until the collective's timeout
(``ddp.timeout_s``), and ``srun`` or a second torchrun agent does not end the other processes of
a job when one of them dies. :class:`RankWatch` watches the ranks beside training, through the
key-value store every process group already has (hosted by rank 0's process, or by torchrun's
agent), from a daemon thread in every rank:

* every rank bumps its heartbeat counter every :data:`POLL_S` seconds;
* rank 0 reads the counters of the others, every other rank reads rank 0's: a counter that did
  not move for ``silent_s`` seconds (a dead or frozen process), an unreachable store (its host
  is gone), or a failure another rank posted (an exception, :meth:`RankWatch.on_exception`)
  ends this rank;
* ending: rank 0 posts the failure for the others; a rank that outlives rank 0 marks rank 0's
  sacred ``-F`` runs ``FAILED`` with the reason (rank 0 cannot, and they would stay ``RUNNING``);
  after ``grace_s`` seconds for the main thread to stop by itself (it records its own error,
  with the traceback), the process exits with status 1: the main thread may be stuck in a
  collective that never returns.

A rank whose main thread raises stops watching (it is ending by itself: the watch must not cut
short its checkpoint flush or its sacred record). At the end of training every rank posts
``done`` and is no longer watched; rank 0 waits until all have (so its store outlives every
watcher).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist

from helpers.data.atomic import atomic_write

_logger = logging.getLogger(__name__)

#: seconds between heartbeats and looks at the other ranks
POLL_S = 1.0
#: seconds rank 0 waits at the end for the other ranks to post ``done``
DONE_WAIT_S = 60.0
#: where rank 0 leaves the ``-F`` folders of its sacred run, for the survivors (see RankZeroDecides)
SACRED_RUN_DIRS_ENV = "PASST_SACRED_RUN_DIRS"


def sacred_run_dirs() -> list[str]:
    """Rank 0's sacred ``-F`` run folders, as this process knows them."""
    return [d for d in os.environ.get(SACRED_RUN_DIRS_ENV, "").split(os.pathsep) if d]


def mark_runs_failed(run_dirs: Sequence[str], reason: str) -> None:
    """Mark the sacred runs in these ``-F`` observer folders failed, unless they already ended.

    For a process that ended without telling sacred (killed), written by one that survived it.
    """
    for folder in run_dirs:
        path = Path(folder) / "run.json"
        try:
            record = json.loads(path.read_text())
            if record.get("status") != "RUNNING":
                continue
            record.update(status="FAILED", stop_time=datetime.datetime.utcnow().isoformat(), fail_trace=[reason])
            with atomic_write(path) as f:
                f.write(json.dumps(record, indent=2, sort_keys=True).encode())
        except (OSError, ValueError) as err:
            _logger.error("could not mark the sacred run in %s failed: %s", folder, err)


class RankWatch(pl.Callback):
    """See the module docstring.

    Args:
        silent_s: a rank whose heartbeat has not moved for this long is taken for dead.
        grace_s: seconds the main thread has to stop by itself before the process exits.
    """

    def __init__(self, silent_s: float = 30.0, grace_s: float = 10.0) -> None:
        if silent_s <= POLL_S:
            raise ValueError(f"ddp.dead_rank_after_s must be more than {POLL_S} s, got {silent_s}")
        self.silent_s, self.grace_s = float(silent_s), float(grace_s)
        self._store: dist.Store | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.rank, self.world, self._prefix, self.rank0_pid = 0, 1, "", "?"
        #: why this rank ended, once it did (for the error of the main thread)
        self.reason: str | None = None

    # ------------------------------------------------------------------------------ Lightning
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size <= 1 or not dist.is_initialized():
            return
        # a fresh key space per run (torchrun's store outlives restarts)
        token = trainer.strategy.broadcast(f"{os.getpid()}-{time.time_ns()}", src=0)
        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not host or not port:
            _logger.warning("MASTER_ADDR/MASTER_PORT unknown: dead ranks are found by the collectives' timeout only")
            return
        self.rank, self.world, self._prefix = trainer.global_rank, trainer.world_size, f"passt-watch/{token}/"
        self.rank0_pid = token.split("-")[0]
        self._store = dist.TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(seconds=10))
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="rank-watch", daemon=True)
        self._thread.start()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._store is None:
            return
        self._stop_watching()
        if self.rank and self.reason is None and not self._rank_zero_alive():
            # a collective failed because rank 0 died: it cannot record that in its sacred run
            self.reason = f"rank 0 (pid {self.rank0_pid}) is gone (killed?)"
            mark_runs_failed(sacred_run_dirs(), f"{self.reason}; rank {self.rank} stopped with "
                                                f"{type(exception).__name__}: {exception}")
        try:
            self._store.set(self._key("failed"), f"rank {self.rank} failed: {type(exception).__name__}: {exception}")
        except Exception:  # noqa: BLE001 -- the store may be gone with rank 0; ending anyway
            pass

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._store is None:
            return
        failed = self._stop_watching()
        try:
            self._store.set(self._key(f"done/{self.rank}"), "1")
            if self.rank == 0 and not failed and not self._store.check([self._key("failed")]):
                self._store.wait([self._key(f"done/{r}") for r in range(1, self.world)],
                                 datetime.timedelta(seconds=DONE_WAIT_S))
        except Exception as err:  # noqa: BLE001 -- a rank that never posted done: nothing to wait for
            _logger.warning("rank watch: not every rank finished: %s", err)
        self._store = None

    # --------------------------------------------------------------------------------- thread
    def _key(self, name: str) -> str:
        return self._prefix + name

    def _rank_zero_alive(self) -> bool:
        """Whether rank 0 still beats, finished, or posted a failure of its own (waits up to 2.5 beats)."""
        store, beat = self._store, self._key("beat/0")
        try:
            first = store.add(beat, 0)
            deadline = time.monotonic() + 2.5 * POLL_S
            while True:
                if store.check([self._key("done/0")]) or store.add(beat, 0) != first:
                    return True
                if store.check([self._key("failed")]) and store.get(self._key("failed")).startswith(b"rank 0 "):
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(POLL_S / 4)
        except Exception:  # noqa: BLE001 -- the store went away with rank 0
            return False

    def _stop_watching(self) -> bool:
        """Stop the thread; True when this rank already ended (or was told to)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * POLL_S + 10)
        return self.reason is not None

    def _watch(self) -> None:
        watched = [0] if self.rank else list(range(1, self.world))
        seen = {r: (-1, time.monotonic()) for r in watched}  # rank -> (counter, when it last moved)
        while not self._stop.wait(POLL_S):
            try:
                reason = self._look(watched, seen)
            except Exception as err:  # noqa: BLE001 -- the store went away with its host
                if self._stop.is_set():
                    return
                reason = f"rank 0 (pid {self.rank0_pid}) is gone (the store of the process group is unreachable: {err})"
            if reason is not None:
                self._end(reason)
                return

    def _look(self, watched: list[int], seen: dict[int, tuple[int, float]]) -> str | None:
        store = self._store
        store.add(self._key(f"beat/{self.rank}"), 1)
        if store.check([self._key("failed")]):
            return store.get(self._key("failed")).decode()
        now = time.monotonic()
        for rank in watched:
            if store.check([self._key(f"done/{rank}")]):
                continue
            count = store.add(self._key(f"beat/{rank}"), 0)
            if count != seen[rank][0]:
                seen[rank] = (count, now)
            elif now - seen[rank][1] > self.silent_s:
                return f"rank {rank} gave no sign of life for {self.silent_s:.0f} s (dead or frozen)"
        return None

    def _end(self, reason: str) -> None:
        if self._stop.is_set():
            return
        self.reason = reason
        message = f"rank {self.rank} stops: {reason}"
        print(message, file=sys.stderr, flush=True)
        if self.rank == 0:
            try:
                self._store.set(self._key("failed"), reason)
            except Exception:  # noqa: BLE001
                pass
        elif reason.startswith("rank 0 "):
            mark_runs_failed(sacred_run_dirs(), reason)  # rank 0 cannot record it
        if self._stop.wait(self.grace_s):
            return  # the main thread raised meanwhile and is ending the process itself
        if self.rank == 0:
            mark_runs_failed(sacred_run_dirs(), f"{message}; the main thread did not stop within "
                                                f"{self.grace_s:.0f} s (stuck in a collective) and was ended")
        print(f"rank {self.rank}: exiting (stuck in a collective)", file=sys.stderr, flush=True)
        os._exit(1)

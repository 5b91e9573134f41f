"""Test helper: run ``ex_audioset.py store_teacher_logits`` and SIGKILL the process after N chunks are written.

    python tests/sigkill_teacher_store.py N <ex_audioset.py arguments>

Right after the N-th chunk of work reaches the disk the process kills itself with SIGKILL (no
cleanup, no exception handler runs), as a kill from outside at that moment would.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from helpers.data.teacher_store import StoreWork

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    after = int(sys.argv[1])
    real_write = StoreWork._write
    written = []

    def write_then_die(self, chunk, buf):
        real_write(self, chunk, buf)
        written.append(chunk)
        if len(written) == after:
            os.kill(os.getpid(), signal.SIGKILL)

    StoreWork._write = write_then_die
    sys.argv = [str(ROOT / "ex_audioset.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()

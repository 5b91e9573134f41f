"""Test helper: run ``ex_audioset.py`` and SIGKILL the process half-way through writing a checkpoint.

    python tests/sigkill_during_save.py STEP <ex_audioset.py arguments>

The first checkpoint written at training step STEP gets half of its bytes on the disk, then the
process kills itself with SIGKILL (no cleanup, no exception handler runs), as a kill from
outside at that moment would.
"""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    step = int(sys.argv[1])
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("global_step") == step and hasattr(f, "fileno")):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    sys.argv = [str(ROOT / "ex_audioset.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()

"""Test helper: train on a small file system that fills up, then report what survived, as JSON.

    unshare --user --map-root-user --mount python tests/disk_full_run.py DISK SIZE <ex_audioset.py arguments>

Mounts a ``SIZE`` tmpfs at ``DISK`` (visible to this process and its children only), runs
``ex_audioset.py -F DISK/sacred with ... output_dir=DISK/out`` with wandb writing there too,
fills the file system as soon as the first ``last.ckpt`` exists, waits for training to stop,
and prints one JSON line: the exit status, the output, the step of the ``last.ckpt`` that is
left (read as a resume would), leftover partial files, and whether sacred's ``run.json`` parses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    disk, size, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    env = {**os.environ, "WANDB_DIR": str(disk)}
    cmd = [sys.executable, str(ROOT / "ex_audioset.py"), "-F", str(disk / "sacred"), *args, f"output_dir={disk / 'out'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(disk.glob("out/*/*/checkpoints/last.ckpt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(disk / "filler", "wb") as f:  # take every byte left
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    filled_at = time.monotonic()
    output = proc.communicate(timeout=300)[0]
    stopped_after = time.monotonic() - filled_at

    from models.checkpoints import read_checkpoint

    (last,) = disk.glob("out/*/*/checkpoints/last.ckpt")
    try:
        json.loads((disk / "sacred" / "1" / "run.json").read_text())
        run_json_parses = True
    except ValueError:
        run_json_parses = False
    print(json.dumps({
        "returncode": proc.returncode, "output": output[-6000:], "stopped_after_s": stopped_after,
        "last_step": int(read_checkpoint(last)["global_step"]), "last_checkpoint": str(last),
        "partial_files": [p.name for p in disk.rglob("*.partial")], "run_json_parses": run_json_parses,
    }))


if __name__ == "__main__":
    main()

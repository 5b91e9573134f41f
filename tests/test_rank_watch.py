"""The rank watch ends a run whose rank went silent, where no collective ever fails (real processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.experiment.rank_watch import POLL_S, RankWatch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_frozen_rank_ends_the_run_within_seconds_and_marks_the_sacred_run_failed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DDP", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")}
    log = tmp_path / "output.txt"
    with open(log, "w") as out:  # a file: the frozen rank 1 would hold a pipe open
        rank0 = subprocess.Popen([sys.executable, str(ROOT / "tests" / "rank_watch_run.py"), str(tmp_path)], cwd=ROOT,
                                 env={**env, "OMP_NUM_THREADS": "1"}, stdout=out, stderr=subprocess.STDOUT)
    try:
        rank0.wait(timeout=120)
        ended = time.time() - float((tmp_path / "frozen").read_text())
        output = log.read_text()
    finally:
        rank0.kill()
        if (tmp_path / "rank1.pid").exists():  # frozen: it cannot end itself (no thread of it runs)
            os.kill(int((tmp_path / "rank1.pid").read_text()), signal.SIGKILL)
    assert rank0.returncode == 1, output[-3000:]
    assert "rank 1 gave no sign of life for 3 s" in output
    # silence (3 s) + a look (1 s) + the grace for the main thread (2 s), with room for a loaded machine
    assert ended < 3 + POLL_S + 2 + 10, ended
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "FAILED" and "stuck in a collective" in run["fail_trace"][0]


def test_the_watch_needs_a_silence_longer_than_its_look():
    with pytest.raises(ValueError, match="dead_rank_after_s"):
        RankWatch(silent_s=POLL_S)

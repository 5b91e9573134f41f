"""Helpers for the end-to-end tests: run ``ex_audioset.py`` in a subprocess and read its sacred run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py

from helpers.data.hdf5_dataset import open_read_only

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "ex_audioset.py")


def run_cli(*args: str, ddp: int | None = None, timeout: int = 300, script: str = SCRIPT,
            threads: int | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` (default ex_audioset.py); returns the process with ``.output`` (stdout + stderr).

    ``threads`` sets OMP_NUM_THREADS (1 is fastest for tiny models on shared cores).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("DDP", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    if ddp:
        env["DDP"] = str(ddp)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    proc.output = proc.stdout + proc.stderr
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.output[-6000:]
    return proc


def data_config(mini: dict, **overrides) -> dict:
    """Config updates pointing basedataset at the mini AudioSet, with small loaders (for in-process runs)."""
    return {"basedataset": {**mini["basedataset_config"], **overrides},
            "datasets": {"training": {"batch_size": 4, "num_workers": 0}, "test": {"batch_size": 4, "num_workers": 0}},
            "trainer": {"enable_progress_bar": False}}


def data_args(mini: dict, **overrides: str) -> list[str]:
    """:func:`data_config` as command-line updates."""
    def flat(cfg: dict, prefix: str = "") -> list[str]:
        return [arg for k, v in cfg.items()
                for arg in (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"])]

    return flat(data_config(mini, **overrides))


def sacred_run(folder: Path, run_id: int = 1) -> dict:
    run_dir = folder / str(run_id)
    run = json.loads((run_dir / "run.json").read_text())
    run["info"] = json.loads((run_dir / "info.json").read_text())
    run["config"] = json.loads((run_dir / "config.json").read_text())
    run["metrics"] = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    return run


def copy_hdf5(src: str, dst: Path, rows: int, corrupt_row: int | None = None) -> str:
    """The first ``rows`` clips of ``src``; ``corrupt_row`` gets bytes that are not audio."""
    with open_read_only(src) as fin, h5py.File(dst, "w") as fout:
        for key in fin:
            data = fin[key][:rows]
            if key == "mp3" and corrupt_row is not None:
                data[corrupt_row] = data[corrupt_row][:200][::-1].copy()
            fout.create_dataset(key, data=data, dtype=fin[key].dtype)
        fout.attrs.update(dict(fin.attrs))
    return str(dst)

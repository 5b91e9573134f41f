"""The benchmark scripts stay runnable: each one's imports resolve (they import each other and the helpers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: siblings import each other
    spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # module level only: main() runs under __name__ == "__main__"
    assert callable(getattr(module, "main", None)), f"{script} has no main()"


def test_gpu_check_script_parses():
    import subprocess

    done = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

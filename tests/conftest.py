"""Shared pytest fixtures.

* ``_test_environment`` (session, autouse): wandb offline with all its folders in a temporary
  directory, a small torch thread count so tests do not oversubscribe the CPU, and ``PYTHONPATH``
  naming this checkout, so that the commands and helper scripts the tests start as subprocesses
  import this checkout's packages (as pytest's ``pythonpath`` does in-process), whichever copy is installed.
* ``offline_home``: an empty torch hub cache (``TORCH_HOME``, returned) and no network: downloads fail
  as offline; release files and label lists a test puts there are found.
* ``mini_audioset`` (session): a tiny synthetic AudioSet made with the real prepare script (see
  :func:`audioset.synthetic.build_mini_audioset` for the returned keys).
* ``write_audio``: a helper writing a waveform as .wav/.mp3/.flac.
* ``mini_esc50``, ``mini_openmic``, ``mini_fsd50k`` (session): mini releases made into each
  dataset's layout by its real prepare script (see ``tests/downstream_data.py``).

``--cpu-precision=fp32|bf16|other`` forces the CPU precision decision for the whole session
(``PASST_CPU_PRECISION``, inherited by the subprocesses of CLI tests); ``other`` is the branch this
machine would not take by itself. ``make test`` reruns the tests marked ``precision`` (their
outcome depends on that decision) with ``other``, so each machine runs both branches.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from downstream_data import prepared_esc50, prepared_fsd50k, prepared_openmic

from audioset.synthetic import build_mini_audioset, write_audio_file
from models.precision import CPU_PRECISION_ENV, cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-precision", choices=["fp32", "bf16", "other"],
                     help="force the CPU precision decision (PASST_CPU_PRECISION) for this session")


def pytest_configure(config: pytest.Config) -> None:
    forced = config.getoption("--cpu-precision")
    if forced == "other":
        forced = "fp32" if cpu_has_fast_bf16() else "bf16"
    if forced:
        os.environ[CPU_PRECISION_ENV] = forced


def pytest_report_header(config: pytest.Config) -> str:
    return f"CPU precision decision: {'bf16' if cpu_has_fast_bf16() else 'fp32'} " \
           f"({CPU_PRECISION_ENV}={os.environ.get(CPU_PRECISION_ENV, 'auto')})"


@pytest.fixture(scope="session", autouse=True)
def _test_environment(tmp_path_factory: pytest.TempPathFactory):
    """wandb offline into a temp folder; torch threads limited to the cores (at most 4)."""
    root = tmp_path_factory.mktemp("wandb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    folders = {"WANDB_DIR": "runs", "WANDB_CACHE_DIR": "cache", "WANDB_CONFIG_DIR": "config", "WANDB_DATA_DIR": "data"}
    for var, sub in folders.items():
        (root / sub).mkdir()
        mp.setenv(var, str(root / sub))
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(previous_threads)
    mp.undo()


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """An empty torch hub cache (``TORCH_HOME``; the hub folder is ``<it>/hub``) and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # honour TORCH_HOME even if set_dir was used

    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch"


@pytest.fixture
def write_audio():
    """The :func:`write_audio_file` helper, as a fixture."""
    return write_audio_file


@pytest.fixture(scope="session")
def mini_audioset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny synthetic AudioSet (16 balanced, 16 unbalanced, 8 eval clips of 1.5 s); see :func:`build_mini_audioset`."""
    return build_mini_audioset(tmp_path_factory.mktemp("mini_audioset"))


@pytest.fixture(scope="session")
def mini_esc50(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mini ESC-50 (4 tone classes, 2 clips of 1 s per class and fold), prepared from its release zip."""
    return prepared_esc50(tmp_path_factory.mktemp("mini_esc50"))


@pytest.fixture(scope="session")
def mini_openmic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mini OpenMIC-2018 (24 training and 8 test clips of 1 s), prepared from its archive."""
    return prepared_openmic(tmp_path_factory.mktemp("mini_openmic"))


@pytest.fixture(scope="session")
def mini_fsd50k(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mini FSD50K (64 train, 8 val, 8 eval clips of 0.6-2.6 s), prepared from its unpacked folders."""
    return prepared_fsd50k(tmp_path_factory.mktemp("mini_fsd50k"))

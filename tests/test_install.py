"""``pip install -e .`` (what ``make install`` runs): the packages import from any folder, the commands run.

The project is installed into a fresh virtual environment in a temporary folder, with the packages
of this interpreter (torch, ...) visible through a ``.pth`` file, so that only the project itself is
installed (offline, seconds). ``PYTHONPATH`` is cleared and every command runs in another folder:
what works here works through the installation, not through the checkout.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_checkpoints import write_tiny_checkpoint

from audioset.synthetic import write_audio_file
from helpers.inference.model import load_checkpoint
from helpers.inference.tagging import tag_files

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["dog", "cat", "bird"]
COMMANDS = ("passt-tag", "passt-export", "passt-app")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """A virtual environment with this checkout installed editable; its ``bin`` folder and a clean environment."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "shared_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "-e", str(ROOT)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    away = tmp_path_factory.mktemp("elsewhere")
    return {"bin": root / "bin", "env": env, "cwd": away}


def run(venv: dict, *command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv["bin"] / command[0]), *command[1:]], cwd=venv["cwd"], env=venv["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_packages_import_from_another_folder(venv):
    code = ("import config_updates, ex_audioset, helpers, models, audioset, esc50, openmic, fsd50k, folder, "
            "models.passt; print(models.passt.__file__)")
    done = run(venv, "python", "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip()) == ROOT / "models" / "passt.py"
    # a prepare script started by its path (it puts nothing on sys.path itself)
    script = ROOT / "audioset" / "prepare_scripts" / "create_h5pymp3_dataset.py"
    done = run(venv, "python", str(script), "--help")
    assert done.returncode == 0 and "--segments" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("command", COMMANDS)
def test_console_commands_show_their_help(venv, command):
    done = run(venv, command, "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"usage: {command}") and "--model" in done.stdout


def test_tagging_command_tags_a_file_with_a_tiny_checkpoint(venv, tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "tiny.ckpt", CLASSES, input_tdim=200)
    rng = np.random.default_rng(0)
    clip = write_audio_file(tmp_path / "clip.wav", (0.1 * rng.standard_normal(3 * 32000)).astype(np.float32), 32000)
    out = tmp_path / "scores.json"
    done = run(venv, "passt-tag", str(clip), "--model", str(ckpt), "--device", "cpu", "--precision", "fp32",
               "--workers", "0", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dog" in done.stdout or "cat" in done.stdout or "bird" in done.stdout
    document = json.loads(out.read_text())
    assert document["classes"] == CLASSES
    expected = next(tag_files(load_checkpoint(ckpt).place("cpu", "fp32"), [clip]))
    got = np.array([w["scores"] for w in document["files"][0]["windows"]])
    np.testing.assert_allclose(got, expected.scores, atol=1e-5)

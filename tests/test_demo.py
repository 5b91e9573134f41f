"""``make demo`` end to end: the real experiment must actually learn the synthetic classes.

This is the one test that would catch targets drifting away from their waveforms anywhere between
the prepare script, the HDF5 dataset, the importance sampler and the Lightning module.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.precision  # must learn in fp32 and in bf16
def test_demo_learns_the_synthetic_classes(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--out-dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "sacred" / "1" / "run.json").read_text())
    result = run["result"]
    assert run["status"] == "COMPLETED"
    assert result["val_examples"] == 8
    # chance level is ROC-AUC 0.5; the demo reaches 1.0 (seed 1)
    assert result["val_roc_auc"] > 0.85 and result["val_mAP"] > 0.7
    assert result["swa_val_roc_auc"] > 0.85
    info = json.loads((tmp_path / "sacred" / "1" / "info.json").read_text())
    if info["precision"] == "32-true":
        # the losses recorded in fp32 before issue 17's refactor; loose, as 640 steps amplify another
        # CPU's rounding (tests/test_pinned_outputs.py pins a short run tightly)
        assert result["val_loss"] == pytest.approx(0.0114734, rel=1e-2)
        assert result["swa_val_loss"] == pytest.approx(0.0132066, rel=1e-2)
    assert list((tmp_path / "outputs").rglob("last.ckpt"))

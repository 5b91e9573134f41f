"""What a run tells: a line per validation, the end summary, the resume command, no empty folders."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from experiment_cli import ROOT, data_args, data_config, ok, run_cli, sacred_run

from helpers.experiment.report import remove_if_empty, resume_command, summary
from helpers.training.console import ValidationReport

QUIET = {"--loglevel": "ERROR"}


def test_a_validation_line_has_the_epoch_losses_every_metric_lr_and_time():
    report = ValidationReport(["valid", "eval"])
    metrics = {"train_loss_epoch": 0.41234, "valid_mAP": 0.5, "valid_loss": 0.61, "eval_mAP": 0.45,
               "swa_valid_mAP": 0.52, "epoch": 3.0, "lr-AdamW/pg1": 1e-5}
    assert report.line(3, 10, metrics, 1e-5, 12.34) == (
        "epoch 3/9  train_loss 0.4123  eval_mAP 0.45  valid_loss 0.61  valid_mAP 0.5  swa_valid_mAP 0.52  "
        "lr 1.00e-05  12.3 s")


def test_resume_command_is_the_same_command_with_the_checkpoint(monkeypatch):
    monkeypatch.delenv("DDP", raising=False)
    argv = ["ex_folder.py", "-F", "runs/", "with", "basedataset.audio_dir=my genres/", "ckpt_path=old.ckpt", "seed=7"]
    command = resume_command(argv, "out/run 1/checkpoints/last.ckpt")
    assert shlex.split(command) == ["python", "ex_folder.py", "-F", "runs/", "with",
                                    "ckpt_path=out/run 1/checkpoints/last.ckpt", "basedataset.audio_dir=my genres/",
                                    "seed=7"]
    monkeypatch.setenv("DDP", "2")
    assert resume_command(["ex_audioset.py"], "last.ckpt") == "DDP=2 python ex_audioset.py with ckpt_path=last.ckpt"


def test_only_empty_run_folders_are_removed(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert remove_if_empty(tmp_path / "empty") and not (tmp_path / "empty").exists()
    (tmp_path / "used" / "wandb").mkdir(parents=True)
    (tmp_path / "used" / "wandb" / "run.log").write_text("x")
    assert not remove_if_empty(tmp_path / "used") and (tmp_path / "used" / "wandb" / "run.log").is_file()
    assert not remove_if_empty(tmp_path / "nowhere")


def test_the_summary_names_checkpoints_metrics_and_the_sacred_run():
    text = summary("out/run", ("out/run/checkpoints/best.ckpt", "val_mAP", 0.51234), "out/run/checkpoints/last.ckpt",
                   {"val_mAP": 0.5, "val_loss": 0.25}, [])
    assert "best checkpoint: out/run/checkpoints/best.ckpt  (val_mAP 0.5123)" in text
    assert "last checkpoint: out/run/checkpoints/last.ckpt  (val_loss 0.25  val_mAP 0.5)" in text
    assert "run folder: out/run" in text and "sacred run: not stored (-F <folder>" in text


# -------------------------------------------------------------- resuming, as the README says
def readme_commands(section: str, script: str) -> list[list[str]]:
    """The ``python <script>`` lines of the README section's bash blocks, split as a shell would (without the script)."""
    text = (ROOT / "README.md").read_text()
    body = re.split(r"\n#{2,} ", text.split(f"\n### {section}\n", 1)[1], maxsplit=1)[0]
    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", body, re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line)[2:] for line in lines if line.startswith(f"python {script} ")]


def _local(args: list[str], mini: dict, tmp_path: Path, extra: list[str]) -> list[str]:
    """A README line on the mini AudioSet, in ``tmp_path``, with ``extra`` updates."""
    args = [a.replace("/data/audioset_hdf5s/", mini["basedataset_config"]["base_dir"])
            .replace("runs/", f"{tmp_path / 'runs'}/") for a in args]
    at = args.index("with") + 1
    return args[:at] + extra + [f"output_dir={tmp_path / 'outputs'}"] + args[at:]


@pytest.mark.slow
def test_ctrl_c_stops_like_sigterm_and_the_printed_command_resumes_with_the_runs_seed(mini_audioset, tmp_path):
    start, resume = readme_commands("Resuming", "ex_audioset.py")
    assert "seed=7" in start and "ckpt_path=outputs/audioset/<run>/checkpoints/last.ckpt" in resume
    small = ["tiny_model", *data_args(mini_audioset, epoch_len=16), "datasets.training.batch_size=1",
             "trainer.max_epochs=2", "checkpointing.last_every_n_steps=2", "wandb.mode=disabled"]  # 16 steps an epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DDP", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "ex_audioset.py"), *_local(start, mini_audioset, tmp_path, small)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "outputs").glob("audioset/*/checkpoints/last.ckpt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, out + err
    assert "error: Training stopped by Ctrl-C (SIGINT) at the end of a batch; resume it with" in err
    assert "Traceback" not in err and "Detected KeyboardInterrupt" not in err + out
    first = sacred_run(tmp_path / "runs", 1)
    assert first["status"] == "FAILED" and first["config"]["seed"] == 7

    printed = err.split("resume it with\n", 1)[1].splitlines()[0].strip()
    command = shlex.split(printed)
    assert command[0] == "python" and f"ckpt_path={first['info']['run_dir']}/checkpoints/last.ckpt" in command
    ok(subprocess_run([sys.executable, *command[1:]], env))  # exactly what was printed
    second = sacred_run(tmp_path / "runs", 2)
    assert second["status"] == "COMPLETED" and second["info"]["run_dir"] == first["info"]["run_dir"]
    last = torch.load(second["info"]["last_checkpoint"], weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 32 and last["passt"]["seed"] == 7

    # the README's resume line gives no seed: the run's comes from the checkpoint
    line = [a.replace("outputs/audioset/<run>", first["info"]["run_dir"]) for a in resume]
    proc = ok(run_cli(*_local(line, mini_audioset, tmp_path, [*small[:-3], "trainer.max_epochs=3", "wandb.mode=disabled"]),
                      threads=1))
    third = sacred_run(tmp_path / "runs", 3)
    assert third["config"]["seed"] == 7 and "resuming with the run's seed=7" in proc.output
    assert third["status"] == "COMPLETED" and torch.load(third["info"]["last_checkpoint"], weights_only=True)["epoch"] == 2


def subprocess_run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    proc.output = proc.stdout + proc.stderr
    return proc


def test_a_resume_that_gives_another_seed_or_batch_size_stops_before_any_work(mini_audioset, tmp_path):
    from ex_audioset import ex

    updates = data_config(mini_audioset)
    updates.update(output_dir=str(tmp_path), wandb={"mode": "disabled"}, seed=7)
    run = ex.run(named_configs=["mini_train", "tiny_model"], config_updates=updates, options=QUIET)
    last = run.info["last_checkpoint"]
    assert torch.load(last, weights_only=True)["passt"]["seed"] == 7 and run.config["seed"] == 7
    for key, value, saved in (("seed", 8, 7), ("datasets.training.batch_size", 2, 4)):
        changed = {**updates, "ckpt_path": last, "trainer": {"max_epochs": 3}}
        if key == "seed":
            changed["seed"] = value
        else:
            changed["datasets"] = {**updates["datasets"], "training": {**updates["datasets"]["training"], "batch_size": value}}
        with pytest.raises(ValueError, match=rf"trained with {re.escape(key)}={saved}, but this command gives "
                                             rf"{re.escape(key)}={value}"):
            ex.run(named_configs=["mini_train", "tiny_model"], config_updates=changed, options=QUIET)
    del updates["seed"]  # none given: the run's
    resumed = ex.run(named_configs=["mini_train", "tiny_model"], options=QUIET,
                     config_updates={**updates, "ckpt_path": last, "trainer": {"max_epochs": 3}})
    assert resumed.config["seed"] == 7 and resumed.status == "COMPLETED"

"""End-to-end: the real command line (``python ex_audioset.py ...`` in a subprocess) on a tiny AudioSet.

A tiny PaSST (``tiny_model``) trains with ``mini_train`` (mixup, SWA, the importance sampler),
leaving a sacred run (``-F``), an offline wandb run and checkpoints; then evaluation of an
ensemble of two of those checkpoints, resuming, and bad input (DDP and the other launch routes:
``tests/test_scale_out.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from experiment_cli import copy_hdf5, data_args, data_config, ok, run_cli, sacred_run

from models.precision import cpu_has_fast_bf16


@pytest.fixture(scope="module")
def trained(mini_audioset, tmp_path_factory):
    """One training run of 2 epochs; its sacred run, outputs and process."""
    tmp = tmp_path_factory.mktemp("trained")
    # epoch_len=12 and no batch limit: 3 batches of 4 per epoch only if the importance sampler is used
    proc = ok(run_cli("-F", str(tmp / "sacred"), "with", "mini_train", "tiny_model",
                      *data_args(mini_audioset, epoch_len=12), "trainer.limit_train_batches=None",
                      "trainer.precision=16", f"output_dir={tmp / 'out'}"))
    return {"tmp": tmp, "proc": proc, "run": sacred_run(tmp / "sacred")}


@pytest.mark.slow
@pytest.mark.precision
def test_training_leaves_sacred_run_checkpoints_and_offline_wandb_run(trained):
    run = trained["run"]
    assert run["status"] == "COMPLETED"
    result, info = run["result"], run["info"]
    for key in ("val_mAP", "val_roc_auc", "val_loss", "swa_val_mAP", "swa_val_loss"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["val_examples"] == 8
    assert info["corrupt_clips"] == 0 and info["world_size"] == 1
    # trainer.precision=16 on the CPU: bf16 autocast where it is native, fp32 elsewhere, announced in the log
    expected = "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
    assert info["precision"] == expected and f"using '{expected}'" in trained["proc"].output
    for noise in ("pkg_resources", "anonymous", "Added new config entry"):  # sacred's import, wandb, trainer keys
        assert noise not in trained["proc"].output

    steps = run["metrics"]["train_loss_step"]["steps"]
    assert len(steps) == 6  # 2 epochs x (epoch_len 12 / batch 4): the weighted sampler sets the epoch
    assert run["metrics"]["val_mAP"]["steps"] and run["metrics"]["swa_val_mAP"]["steps"]

    last, best = Path(info["last_checkpoint"]), Path(info["best_checkpoint"])
    assert last.is_file() and best.is_file() and "val_mAP" in best.name
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("net.blocks.") for k in keys) and any(k.startswith("net_swa.blocks.") for k in keys)
    assert int(ckpt["state_dict"]["swa_n_averaged"]) == 2 and ckpt["epoch"] == 1
    # the checkpoint alone rebuilds its network: the models config travels with it
    assert ckpt["passt"]["experiment"] == "audioset" and ckpt["passt"]["models"] == run["config"]["models"]

    wandb_dir = Path(info["wandb"]["dir"])
    assert info["wandb"]["mode"] == "offline" and "offline-run-" in str(wandb_dir)
    assert wandb_dir.is_dir() and list(wandb_dir.parent.glob("*.wandb"))
    assert list((wandb_dir / "media" / "images").glob("train_spectrograms_*.png"))


@pytest.mark.slow
@pytest.mark.precision
def test_evaluate_only_on_an_ensemble_of_local_checkpoints_with_a_corrupt_clip(trained, mini_audioset):
    info = trained["run"]["info"]
    eval_file = copy_hdf5(mini_audioset["eval_hdf5"], trained["tmp"] / "eval_corrupt.hdf", rows=8, corrupt_row=3)
    members = [
        {"arch": "passt_s_swa_p16_128_ap476", "fstride": 10, "tstride": 10, "checkpoint": info["last_checkpoint"],
         "swa": True},
        {"arch": "passt_s_swa_p16_128_ap476", "fstride": 10, "tstride": 10, "checkpoint": info["best_checkpoint"]},
    ]
    folder = trained["tmp"] / "sacred_eval"
    proc = ok(run_cli("evaluate_only", "-F", str(folder), "with", "tiny_model",
                      *data_args(mini_audioset, eval_hdf5=eval_file), f"models.ensemble={members!r}",
                      f"output_dir={trained['tmp'] / 'out'}"))
    run = sacred_run(folder)
    assert run["status"] == "COMPLETED" and run["command"] == "evaluate_only"
    assert 0.0 <= run["result"]["val_mAP"] <= 1.0 and run["result"]["val_examples"] == 8
    assert "Evaluation results" in proc.stdout and "val_mAP" in proc.stdout
    assert run["info"]["n_params"] == 2 * info["n_params"]  # really two networks
    assert run["info"]["corrupt_clips"] == 1
    assert "evl00000003" in run["info"]["corrupt_clip_examples"][0]


@pytest.mark.slow
@pytest.mark.precision
def test_resume_continues_from_the_checkpoint(mini_audioset, tmp_path):
    # a run of its own: resuming writes into the run folder of the checkpoint
    first = tmp_path / "sacred_first"
    ok(run_cli("-F", str(first), "with", "mini_train", "tiny_model", *data_args(mini_audioset, epoch_len=12),
               "trainer.limit_train_batches=None", f"output_dir={tmp_path / 'out'}"))
    run_dir = Path(sacred_run(first)["info"]["run_dir"])
    folder = tmp_path / "sacred_resume"
    ok(run_cli("-F", str(folder), "with", "mini_train", "tiny_model", *data_args(mini_audioset, epoch_len=12),
               "trainer.limit_train_batches=None", "trainer.max_epochs=3",
               f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"output_dir={tmp_path / 'out'}"))
    run = sacred_run(folder)
    assert run["status"] == "COMPLETED"
    assert Path(run["info"]["run_dir"]).resolve() == run_dir.resolve()
    # Lightning kept its record of the best checkpoint: still one best file (save_top_k=1), not two
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    assert set(run["metrics"]["epoch"]["values"]) == {2.0}  # only the missing epoch was trained
    assert min(run["metrics"]["train_loss_step"]["steps"]) == 6  # the step counter continues
    ckpt = torch.load(run["info"]["last_checkpoint"], map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2 and int(ckpt["state_dict"]["swa_n_averaged"]) == 3


def _run_in_process(monkeypatch, mini_audioset, tmp_path, **overrides):
    """Train in-process with a Trainer that must never be built (the failure has to come first)."""
    from ex_audioset import ex
    from helpers.experiment import commands

    def no_trainer(*args, **kwargs):
        raise AssertionError("the Trainer was built before the bad input was reported")

    monkeypatch.setattr(commands, "build_trainer", no_trainer)
    updates = data_config(mini_audioset, **overrides.pop("basedataset", {}))
    updates["output_dir"] = str(tmp_path)
    for section, values in overrides.items():
        updates.setdefault(section, {}).update(values)
    ex.run(named_configs=["mini_train", "tiny_model"], config_updates=updates, options={"--loglevel": "ERROR"})


def test_missing_hdf5_fails_at_start_up_naming_file_and_prepare_command(monkeypatch, mini_audioset, tmp_path):
    missing = tmp_path / "nowhere" / "eval_segments_mp3.hdf"
    with pytest.raises(FileNotFoundError) as err:
        _run_in_process(monkeypatch, mini_audioset, tmp_path, basedataset={"eval_hdf5": str(missing)})
    assert str(missing) in str(err.value) and "create_h5pymp3_dataset --segments eval_segments.csv" in str(err.value)


def test_targets_that_do_not_fit_n_classes_fail_before_training(monkeypatch, mini_audioset, tmp_path):
    with pytest.raises(ValueError) as err:
        _run_in_process(monkeypatch, mini_audioset, tmp_path, models={"net": {"n_classes": 10}})
    assert "models.net.n_classes=10" in str(err.value) and "(527,)" in str(err.value)


@pytest.mark.slow
def test_model_speed_test_and_test_loaders(mini_audioset, tmp_path):
    proc = ok(run_cli("model_speed_test", "with", "tiny_model", "speed_test.batch_size=2", "speed_test.steps=2",
                      "speed_test.warmup_steps=1"))
    assert "spectrograms/second" in proc.stdout
    misspelt = run_cli("model_speed_test", "with", "tiny_model", "speed_test.step=2")
    assert misspelt.returncode != 0 and "Did you mean speed_test.steps" in misspelt.output
    proc = ok(run_cli("test_loaders", "with", *data_args(mini_audioset)))
    assert "training: tensor(4, 1, 64000)" in proc.stdout and "test: tensor(4, 1, 64000)" in proc.stdout


def test_mini_train_runs_on_a_few_clips_with_the_recipes_epoch(mini_audioset, tmp_path):
    """The debug switch works on small data: the recipe's epoch (100k distinct clips) of a 32-clip set."""
    from ex_audioset import ex

    updates = data_config(mini_audioset, epoch_len=100000)
    updates.update(output_dir=str(tmp_path), wandb={"mode": "disabled"})
    run = ex.run(named_configs=["mini_train", "tiny_model"], config_updates=updates, options={"--loglevel": "ERROR"})
    assert run.status == "COMPLETED" and run.config["basedataset"]["sampler_replace"]
    assert torch.load(run.info["last_checkpoint"], weights_only=True)["global_step"] == 10  # 2 epochs of 5 batches

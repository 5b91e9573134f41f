"""The config tree, its one check, and the named configs, in-process through sacred; config-time decisions."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from pathlib import Path

import pytest
import torch

from ex_audioset import ex
from helpers.experiment.loggers import default_wandb_mode
from helpers.experiment.trainer import build_trainer, ddp_strategy, fast_fp32_matmuls, translate_legacy_keys
from models.build import get_model
from models.preprocess import AugmentMelSTFT
from models.registry import ARCHS, ENSEMBLES, SHORT_NAMES

ROOT = Path(__file__).resolve().parents[1]
STRIP_ANSI = re.compile(r"\x1b\[[0-9;]*m")
QUIET = {"--loglevel": "ERROR"}


def config_of(*named_configs: str, **updates) -> dict:
    """The config sacred builds for these named configs and updates (the config check runs too)."""
    return ex.run("print_config", named_configs=named_configs, config_updates=updates, options=QUIET).config


def _sections(text: str) -> dict[str, set[str]]:
    """``{section path: keys}`` from sacred's indented print_config output."""
    sections: dict[str, set[str]] = {"": set()}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = re.match(r"^( +)([A-Za-z_]\w*)( = |:)", line)
        if not m:
            continue
        indent, key, kind = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join(s for _, s in stack)
        sections.setdefault(path, set()).add(key)
        if kind == ":":
            stack.append((indent, key))
    return sections


@pytest.fixture(scope="module")
def printed_config() -> str:
    """``print_config`` output without colours."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        config_of()
    return STRIP_ANSI.sub("", out.getvalue())


def test_print_config_shows_every_key(printed_config):
    s = _sections(printed_config)
    assert {"lr", "use_mixup", "mixup_alpha", "swa", "swa_epoch_start", "swa_freq", "seed", "ckpt_path"} <= s[""]
    assert set(inspect.signature(get_model).parameters) <= s["models.net"]
    assert set(inspect.signature(AugmentMelSTFT).parameters) <= s["models.mel"]
    assert {"ensemble", "checkpoint", "checkpoint_swa"} <= s["models"]
    assert {"max_epochs", "accelerator", "devices", "strategy", "num_nodes", "precision"} <= s["trainer"]
    assert {"batch_size", "num_workers", "weighted_sampler"} <= s["datasets.training"]
    assert {"base_dir", "eval_hdf5", "clip_length", "epoch_len", "n_classes", "roll", "wavmix"} <= s["basedataset"]


def test_print_config_describes_keys_next_to_their_defaults(printed_config):
    lines = {line.split("=")[0].strip(): line for line in printed_config.splitlines() if "=" in line}
    for key in ("lr", "swa_freq", "max_epochs", "s_patchout_t", "grad_checkpointing", "freqm", "weighted_sampler",
                "mode", "base_dir"):
        assert "#" in lines[key], key  # a description after the default
    assert re.search(r"^  trainer: +# arguments of pytorch_lightning.Trainer", printed_config, re.M)


def test_print_config_shows_the_original_audioset_defaults(printed_config):
    for line in ["lr = 2e-05", "mixup_alpha = 0.3", "swa_epoch_start = 50", "swa_freq = 5", "warm_up_len = 5",
                 "ramp_down_start = 50", "ramp_down_len = 50", "last_lr_value = 0.01",
                 "schedule_mode = 'exp_lin'", "weight_decay = 0.0001", "max_epochs = 130",
                 "s_patchout_t = 40", "s_patchout_f = 4", "freqm = 48", "timem = 192", "batch_size = 12",
                 "batch_size = 20", "use_mixup = True", "swa = True", "adamw = True",
                 "arch = 'passt_deit_bd_p16_384'", "project = 'passt_audioset'", "iid_masks = False",
                 "fmin_aug_range = 10", "fmax_aug_range = 2000", "gain_augment = 7", "roll = True",
                 "shift_range = 50", "wavmix = True", "wavmix_beta = 2", "wavmix_rate = 0.5",
                 "sampler_replace = False", "sample_weight_sum = True", "sample_weight_offset = 100",
                 "epoch_len = 100000", "weight_decay_all = False"]:
        assert line in printed_config, line


def test_every_named_config_has_a_one_line_doc(capsys):
    ex.run("print_named_configs", options=QUIET)
    text = STRIP_ANSI.sub("", capsys.readouterr().out)
    docs = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  ")}
    expected = ({a for a, cfg in ARCHS.items() if not cfg.imagenet} | set(SHORT_NAMES) | set(ENSEMBLES)
                | {"nomixup", "mixup", "mini_train", "tiny_model", "passt", "dynamic_roll"})
    assert expected <= set(docs)
    assert all("#" in docs[name] for name in expected)


@pytest.mark.parametrize("arch", sorted(a for a, cfg in ARCHS.items() if not cfg.imagenet))
def test_released_model_named_configs_come_from_the_registry(arch):
    cfg = ARCHS[arch]
    config = config_of(arch)
    net = config["models"]["net"]
    assert (net["arch"], net["fstride"], net["tstride"], net["input_tdim"], net["pretrained"]) == (
        arch, cfg.fstride, cfg.tstride, cfg.input_tdim, True)
    assert config["models"]["mel"]["hopsize"] == cfg.hopsize


def test_short_names_and_ensembles_use_registered_architectures():
    assert config_of("passt_s_ap4763")["models"]["net"]["arch"] == "passt_s_swa_p16_128_ap4761"
    later_wins = config_of("passt_s_ap4763", "passt_s_30sec", "ensemble_s16_14", "nomixup")
    assert later_wins["models"]["net"]["arch"] == "passt_s_f128_30sec_p16_s10_ap473"
    assert later_wins["basedataset"]["clip_length"] == 30 and later_wins["use_mixup"] is False
    assert later_wins["models"]["ensemble"] == [["passt_s_swa_p16_s14_128_ap471", 14, 14],
                                                ["passt_s_swa_p16_s16_128_ap473", 16, 16]]
    for _, members in ENSEMBLES.values():
        assert all(m in ARCHS for m in members)


@pytest.mark.parametrize(("updates", "message"), [
    ({"trainer": {"max_epoch": 3}}, r"trainer.max_epoch is not a config key. Did you mean trainer.max_epochs"),
    ({"lrr": 1}, r"lrr is not a config key. Did you mean lr\b"),
    ({"models": {"net": {"s_patchout": 3}}}, r"Did you mean models.net.s_patchout_t"),
    ({"basedataset": {"clip_lenght": 3}}, r"Did you mean basedataset.clip_length"),
    ({"speed_test": {"stepz": 3}}, r"Did you mean speed_test.steps"),
    ({"models": {"ensemble": [{"arch": "passt_s_swa_p16_128_ap476", "checkpint": "a.ckpt"}]}},
     r"models.ensemble\[0\].checkpint .*Did you mean models.ensemble\[0\].checkpoint"),
    ({"models": {"ensemble": [["passt_s_swa_p16_128_ap476", 10]]}}, r"use \[arch, fstride, tstride\]"),
])
def test_unknown_keys_are_rejected_with_the_closest_valid_key(updates, message):
    with pytest.raises(ValueError, match=message):
        config_of(**updates)


def test_library_arguments_beyond_the_defaults_are_accepted():
    config = config_of(trainer={"gradient_clip_algorithm": "norm"}, wandb={"job_type": "x"},
                       datasets={"training": {"prefetch_factor": 4}}, checkpointing={"every_n_epochs": 2})
    assert config["trainer"]["gradient_clip_algorithm"] == "norm"


def test_lightning_1_trainer_keys_are_translated_with_one_warning_each(caplog):
    legacy = {"gpus": 0, "accelerator": "ddp", "weights_summary": None, "reload_dataloaders_every_epoch": True,
              "amp_backend": "native", "checkpoint_callback": False, "max_steps": None}
    with caplog.at_level("WARNING"):
        cfg = translate_legacy_keys(legacy)
    assert cfg == {"accelerator": "auto", "strategy": "ddp", "enable_model_summary": False,
                   "reload_dataloaders_every_n_epochs": 1, "enable_checkpointing": False, "max_steps": -1}
    assert translate_legacy_keys({"gpus": 2}) == {"accelerator": "gpu", "devices": 2}
    assert translate_legacy_keys({"accelerator": "cpu", "max_steps": 5}) == {"accelerator": "cpu", "max_steps": 5}
    for key in ("accelerator", "weights_summary", "reload_dataloaders_every_epoch", "amp_backend",
                "checkpoint_callback", "max_steps"):
        assert sum(f"trainer.{key}=" in r.message for r in caplog.records) == 1, key
    # the original's trainer config builds a Lightning 2 Trainer
    trainer = build_trainer({"max_epochs": 1, "gpus": 0, "weights_summary": "full", "benchmark": True,
                             "num_sanity_val_steps": 0, "precision": 16, "reload_dataloaders_every_epoch": True,
                             "accelerator": "cpu"})
    assert trainer.reload_dataloaders_every_n_epochs == 1


@pytest.mark.parametrize(("key", "value", "replacement"), [
    ("resume_from_checkpoint", "a.ckpt", "ckpt_path="), ("stochastic_weight_avg", True, "swa=True"),
    ("accelerator", "dp", "trainer.strategy=ddp"), ("auto_lr_find", True, "lr_find")])
def test_lightning_1_keys_without_an_equivalent_name_the_replacement_before_any_work(key, value, replacement):
    with pytest.raises(ValueError, match=re.escape(replacement)):
        config_of(trainer={key: value})


def test_ddp_strategy_settings():
    ddp = {"bucket_cap_mb": 25, "bf16_compress": False, "timeout_s": 90}
    strategy = ddp_strategy(ddp)
    assert strategy._ddp_kwargs == {"gradient_as_bucket_view": True, "broadcast_buffers": False, "bucket_cap_mb": 25}
    assert strategy._ddp_comm_hook is None and strategy._timeout.total_seconds() == 90
    compressed = ddp_strategy({"bucket_cap_mb": 50, "bf16_compress": True})
    assert compressed._ddp_comm_hook.__name__ == "bf16_compress_hook"
    assert compressed._ddp_kwargs["bucket_cap_mb"] == 50
    # the config's "ddp" string becomes that strategy; other strategies are left to Lightning
    trainer = build_trainer({"accelerator": "cpu", "devices": 2, "strategy": "ddp"}, ddp_cfg=config_of()["ddp"])
    assert trainer.strategy._ddp_kwargs["gradient_as_bucket_view"]
    trainer = build_trainer({"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}, ddp_cfg=config_of()["ddp"])
    assert "gradient_as_bucket_view" not in trainer.strategy._ddp_kwargs
    # trainer.devices=N alone (strategy "auto") gets the same strategy as DDP=N
    trainer = build_trainer({"accelerator": "cpu", "devices": 2}, ddp_cfg=config_of()["ddp"])
    assert trainer.strategy._ddp_kwargs["gradient_as_bucket_view"]


def test_fp32_matmuls_use_tensor_cores_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr("torch.set_float32_matmul_precision", calls.append)
    fast_fp32_matmuls("cpu")
    assert calls == []  # on a CPU "high" could mean bf16 products
    fast_fp32_matmuls("cuda")
    fast_fp32_matmuls(torch.device("cuda", 1))
    assert calls == ["high", "high"]
    build_trainer({"max_epochs": 1, "accelerator": "cpu"})
    assert len(calls) == 2


def test_wandb_is_offline_without_an_account(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert default_wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert default_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert default_wandb_mode() == "disabled"


@pytest.mark.parametrize("script, key, tail", [
    ("ex_audioset", "eval_hdf5", "mp3/eval_segments_mp3.hdf"),
    ("ex_esc50", "meta_csv", "meta/esc50.csv"),
    ("ex_openmic", "openmic_test_hdf5", "mp3/openmic_test.csv_mp3.hdf"),
    ("ex_fsd50k", "valid_hdf5", "mp3/FSD50K.val_mp3.hdf"),
])
def test_dataset_paths_follow_base_dir_with_or_without_a_trailing_slash(script, key, tail):
    experiment = __import__(script).ex
    for base_dir in ("/data/sets", "/data/sets/"):
        cfg = experiment.run("print_config", config_updates={"basedataset": {"base_dir": base_dir}},
                             options=QUIET).config
        assert cfg["basedataset"][key] == f"/data/sets/{tail}"


def test_every_dataset_describes_the_shared_keys_once():
    """The decoding and augmentation keys come from one place (helpers/experiment/dataset_config.py),
    and the augmentation keys are exactly what augment_training_set takes."""
    from helpers.data.augment import AUGMENTATION_KEYS, augment_training_set
    from helpers.experiment.dataset_config import DOCS, shared_dataset_config

    assert set(AUGMENTATION_KEYS) == set(inspect.signature(augment_training_set).parameters) - {"dataset",
                                                                                                "mix_targets"}
    assert set(shared_dataset_config()()) == set(DOCS) >= set(AUGMENTATION_KEYS)
    for folder in ("audioset", "esc50", "openmic", "fsd50k", "folder"):
        source = (ROOT / folder / "dataset.py").read_text()
        assert "shared_dataset_config(" in source
        for key in DOCS:
            assert f"    {key} = " not in source, f"{folder}/dataset.py sets {key} itself"

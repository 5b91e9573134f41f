"""The config tree and named configs through the real command line, plus config-time decisions."""

from __future__ import annotations

import inspect
import re

import pytest
from experiment_cli import ok, run_cli

from helpers.trainer_factory import build_trainer, check_trainer_config, resolve_precision
from helpers.wandb_logging import default_wandb_mode
from models.passt import get_model
from models.preprocess import AugmentMelSTFT

NAMED_CONFIGS = [
    "nomixup", "mixup", "mini_train", "passt", "passt_s_20sec", "passt_s_30sec", "passt_s_ap476",
    "passt_s_ap4763", "passt_s_ap472", "passt_s_p16_s16_128_ap468", "passt_s_swa_p16_s16_128_ap473",
    "passt_s_swa_p16_s14_128_ap471", "passt_s_p16_s14_128_ap469", "passt_s_swa_p16_s12_128_ap473",
    "passt_s_p16_s12_128_ap470", "ensemble_s10", "ensemble_many", "ensemble_4", "ensemble_5",
    "ensemble_s16_14", "dynamic_roll",
]
TOP_LEVEL = ["lr", "use_mixup", "mixup_alpha", "swa", "swa_epoch_start", "swa_freq", "warm_up_len",
             "ramp_down_start", "ramp_down_len", "last_lr_value", "schedule_mode", "adamw", "weight_decay",
             "compile", "seed", "ckpt_path", "output_dir"]
STRIP_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _sections(text: str) -> dict[str, set[str]]:
    """``{section path: keys}`` from sacred's indented print_config output."""
    sections: dict[str, set[str]] = {"": set()}
    stack: list[tuple[int, str]] = []
    for line in STRIP_ANSI.sub("", text).splitlines():
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
    return STRIP_ANSI.sub("", ok(run_cli("print_config")).stdout)


def test_print_config_shows_every_key(printed_config):
    s = _sections(printed_config)
    assert set(TOP_LEVEL) <= s[""]
    assert set(inspect.signature(get_model).parameters) <= s["models.net"]
    assert set(inspect.signature(AugmentMelSTFT).parameters) <= s["models.mel"]
    assert {"ensemble", "checkpoint", "checkpoint_swa"} <= s["models"]
    assert {"max_epochs", "accelerator", "devices", "strategy", "num_nodes", "precision"} <= s["trainer"]
    assert {"project", "mode", "save_dir", "name"} <= s["wandb"]
    assert {"batch_size", "num_workers", "weighted_sampler"} <= s["datasets.training"]
    assert {"batch_size", "num_workers"} <= s["datasets.test"]
    assert {"base_dir", "balanced_train_hdf5", "unbalanced_train_hdf5", "eval_hdf5", "clip_length",
            "epoch_len", "n_classes", "roll", "wavmix"} <= s["basedataset"]


def test_print_config_shows_the_original_audioset_defaults(printed_config):
    for line in ["lr = 2e-05", "mixup_alpha = 0.3", "swa_epoch_start = 50", "swa_freq = 5", "warm_up_len = 5",
                 "ramp_down_start = 50", "ramp_down_len = 50", "last_lr_value = 0.01",
                 "schedule_mode = 'exp_lin'", "weight_decay = 0.0001", "max_epochs = 130",
                 "s_patchout_t = 40", "s_patchout_f = 4", "freqm = 48", "timem = 192", "batch_size = 12",
                 "batch_size = 20", "use_mixup = True", "swa = True", "adamw = True", "compile = False",
                 "mode = 'offline'"]:
        assert line in printed_config, line


def test_print_named_configs_lists_every_named_config_with_its_doc():
    text = STRIP_ANSI.sub("", ok(run_cli("print_named_configs")).stdout)
    for name in NAMED_CONFIGS:
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(name + " ")), None)
        assert line is not None and "#" in line, name


def test_named_configs_set_the_released_architectures_and_ensembles():
    text = STRIP_ANSI.sub("", ok(run_cli("print_config", "with", "passt_s_ap4763", "passt_s_30sec",
                                         "ensemble_s16_14", "nomixup")).stdout)
    s = _sections(text)
    assert "net" in s["models"]
    # later named configs win: passt_s_30sec after passt_s_ap4763
    assert "arch = 'passt_s_f128_30sec_p16_s10_ap473'" in text and "input_tdim = 3000" in text
    assert "clip_length = 30" in text and "use_mixup = False" in text
    assert "passt_s_swa_p16_s14_128_ap471" in text and "passt_s_swa_p16_s16_128_ap473" in text


def test_passt_s_ap4763_points_at_the_released_ap4761_weights():
    from config_updates import RELEASED
    from models.passt import resolve_arch

    assert RELEASED["passt_s_ap4763"] == ("passt_s_swa_p16_128_ap4761", 10, 10)
    for arch, fstride, tstride in RELEASED.values():
        cfg = resolve_arch(arch)  # every named architecture exists
        assert (cfg.fstride, cfg.tstride) == (fstride, tstride)


def test_fp16_mixed_precision_means_bf16_on_the_cpu():
    assert resolve_precision(16, "cpu") == "bf16-mixed"
    assert resolve_precision("16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("32-true", "cpu") == "32-true"
    assert resolve_precision("16-mixed", "gpu") == "16-mixed"


def test_unknown_trainer_keys_are_named_with_a_suggestion():
    with pytest.raises(ValueError, match="trainer.max_epoch .*max_epochs"):
        check_trainer_config({"max_epoch": 3})
    trainer = build_trainer({"max_epochs": 1, "accelerator": "cpu", "precision": 16})
    assert trainer.precision == "bf16-mixed"


def test_wandb_is_offline_without_an_account(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert default_wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert default_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert default_wandb_mode() == "disabled"


@pytest.mark.parametrize("command", ["model_speed_test", "test_loaders", "evaluate_only"])
def test_every_command_rejects_misspelt_keys_before_doing_work(command):
    proc = run_cli(command, "with", "trainer.max_epoch=3", "speed_test.steps=1", "speed_test.warmup_steps=0")
    assert proc.returncode != 0
    assert "trainer.max_epoch" in proc.output and "max_epochs" in proc.output

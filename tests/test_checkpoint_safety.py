"""Loading a checkpoint never runs code from it, unless the user opts in for that file.

The attack is a pickled object whose unpickling calls a function named in the file: here
``exec`` of a line that writes a marker file (a real one would run a shell command). It is put
into each shape a loader accepts (a plain state dict, a Lightning ``.ckpt``, an ImageNet-style
file with a ``model`` key) and fed to every path that reads checkpoints: in-process for every
shape and loader, and once per path through the real command lines (``slow``). None writes the
marker; each ends with an error naming the offending global and the file. With the opt-in the
user is warned (and the file really is unpickled). Checkpoints of this framework, the original
framework's Lightning checkpoints and safetensors exports still load and compute the same.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from experiment_cli import data_args, data_config, ok, run_cli
from original_layout import original_forward, original_state_dict, save_original_lightning_checkpoint

from helpers.inference import hear
from helpers.inference.model import load_checkpoint
from helpers.training.checkpoint_io import AtomicCheckpointIO
from models.build import build_net, get_model
from models.checkpoints import (
    CheckpointError,
    TrustedCheckpointWarning,
    UnsafeCheckpointError,
    extract_state_dict,
    read_checkpoint,
)
from models.passt_weights import load_weights
from models.preprocess import AugmentMelSTFT
from models.registry import ARCHS, ArchConfig
from models.safetensors_file import write_safetensors

ROOT = Path(__file__).resolve().parents[1]
SR = 32000
#: the network of the checkpoints here: 1 block of width 32, time encodings for 2 s
TINY = dict(arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=3, depth=1, embed_dim=32, num_heads=2,
            input_tdim=200)
CLASSES = ["dog", "cat", "bird"]


class WritesMarker:
    """Unpickling it writes ``path``: ``exec`` named in the file runs a line from the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('code from the checkpoint ran')",)


def models_config() -> dict:
    """The ``models`` record training stores in a checkpoint, for :data:`TINY`."""
    return {"net": dict(TINY), "mel": {"n_mels": 128, "hopsize": 320}, "ensemble": [], "checkpoint": None,
            "checkpoint_swa": False}


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return get_model(**TINY).state_dict()


SHAPES = ("state_dict", "lightning", "imagenet")


def payload_checkpoint(path: Path, shape: str, marker: Path, state: dict[str, torch.Tensor]) -> Path:
    """A checkpoint of ``shape`` with the weights ``state`` and one :class:`WritesMarker`."""
    attack = WritesMarker(marker)
    if shape == "state_dict":
        content = {**state, "extra": attack}
    elif shape == "lightning":
        content = {"epoch": 3, "global_step": 30, "state_dict": {f"net.{k}": v for k, v in state.items()},
                   "hyper_parameters": {"config": attack},
                   "passt": {"experiment": "mine", "models": models_config(), "class_names": CLASSES}}
    else:
        content = {"model": state, "args": attack}
    torch.save(content, path)
    return path


def _models_cfg(checkpoint: Path, trust: bool = False) -> dict:
    return {**models_config(), "checkpoint": str(checkpoint), "trust_checkpoint": trust}


def _member_cfg(checkpoint: Path, trust: bool = False) -> dict:
    member = {**TINY, "fstride": 10, "tstride": 10, "checkpoint": str(checkpoint)}
    return {**models_config(), "ensemble": [member], "trust_checkpoint": trust}


#: every loading path, each called as its users call it; ``trust`` is its opt-in
LOADERS = {
    "read_checkpoint": lambda path, trust: read_checkpoint(path, trust_checkpoint=trust),
    "load_weights": lambda path, trust: load_weights(get_model(**TINY), path, trust_checkpoint=trust),
    "models.checkpoint": lambda path, trust: build_net(_models_cfg(path, trust)),
    "ensemble member": lambda path, trust: build_net(_member_cfg(path, trust)),
    "inference load_checkpoint": lambda path, trust: load_checkpoint(path, arch=TINY["arch"], trust_checkpoint=trust),
    "hear.load_model": lambda path, trust: hear.load_model(str(path), arch=TINY["arch"], device="cpu",
                                                           trust_checkpoint=trust),
    "resume (CheckpointIO)": lambda path, trust: AtomicCheckpointIO(trust_checkpoint=trust).load_checkpoint(path),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loader", LOADERS)
def test_every_loader_refuses_a_payload_in_every_shape_naming_it_and_the_file(loader, shape, tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / f"{shape}.ckpt", shape, marker, tiny_state())
    with pytest.raises(UnsafeCheckpointError) as err:
        LOADERS[loader](path, False)
    assert not marker.exists()
    message = str(err.value)
    assert f"Refused to load {path}" in message and "builtins.exec" in message
    assert "--trust-checkpoint" in message and "models.trust_checkpoint=True" in message


@pytest.mark.parametrize("loader", LOADERS)
def test_the_opt_in_warns_then_unpickles_the_file(loader, tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / "trusted.ckpt", "lightning", marker, tiny_state())
    with pytest.warns(TrustedCheckpointWarning, match=rf"{path} with a full unpickle.*builtins.exec.*any code"):
        LOADERS[loader](path, True)
    assert marker.exists()  # the opt-in means it: the file's code ran


def test_trusted_load_gives_the_same_network(tmp_path):
    state = tiny_state(seed=4)
    path = payload_checkpoint(tmp_path / "trusted.pt", "imagenet", tmp_path / "marker", state)
    with pytest.warns(TrustedCheckpointWarning):
        net = load_weights(get_model(**TINY), path, trust_checkpoint=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_a_checkpoint_record_cannot_make_inference_load_another_file(tmp_path):
    marker = tmp_path / "marker"
    payload = payload_checkpoint(tmp_path / "payload.ckpt", "state_dict", marker, tiny_state())
    record = {"models": {**models_config(), "checkpoint": str(payload), "trust_checkpoint": True,
                         "ensemble": [{**TINY, "fstride": 10, "tstride": 10, "checkpoint": str(payload)}]}}
    state = {f"net.models.0.{k}": v for k, v in tiny_state().items()}
    torch.save({"state_dict": state, "passt": record}, tmp_path / "shared.ckpt")
    load_checkpoint(tmp_path / "shared.ckpt")  # the record rebuilds the architecture only
    assert not marker.exists()


def test_a_safe_file_loads_without_a_warning_even_when_trusted(tmp_path):
    torch.save({"state_dict": {f"net.{k}": v for k, v in tiny_state().items()}}, tmp_path / "plain.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrustedCheckpointWarning)
        read_checkpoint(tmp_path / "plain.ckpt", trust_checkpoint=True)


def test_a_damaged_file_is_still_reported_as_damaged_not_as_unsafe(tmp_path):
    path = payload_checkpoint(tmp_path / "a.ckpt", "lightning", tmp_path / "marker", tiny_state())
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        read_checkpoint(path)
    assert not isinstance(err.value, UnsafeCheckpointError)


# --------------------------------------------------------------- what legitimately loads
@pytest.fixture
def tiny_arch(monkeypatch):
    """A registered architecture of the size of :func:`original_state_dict` (width 64, 2 blocks)."""
    cfg = ArchConfig("tiny_original", "https://example.invalid/tiny-original.pt", "test only", embed_dim=64,
                     depth=2, num_heads=4)
    monkeypatch.setitem(ARCHS, cfg.name, cfg)
    return cfg


def test_original_framework_lightning_checkpoint_loads_safely_with_the_same_outputs(tmp_path, tiny_arch):
    live, swa = original_state_dict(seed=1), original_state_dict(seed=2)
    path = tmp_path / "original.ckpt"
    save_original_lightning_checkpoint(path, live, swa)
    # what it holds beyond tensors and plain data, and what torch alone refuses
    assert sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) == [
        "munch.DefaultMunch", "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "sacred.config_helpers.CMD"]
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        torch.load(path, weights_only=True)

    checkpoint = read_checkpoint(path)
    config = checkpoint["hyper_parameters"]
    assert type(config) is dict and type(config["datasets"]["training"]) is dict
    assert config["datasets"]["training"]["dataset"] == "/basedataset.get_full_training_set"
    assert config["models"]["net"]["arch"] == "passt_s_swa_p16_128_ap476"
    x = torch.randn(2, 1, 128, 998)
    for use_swa, sd in ((False, live), (True, swa)):
        net = load_weights(get_model(arch=tiny_arch.name, pretrained=False), path, swa=use_swa).eval()
        torch.testing.assert_close(net(x)[0], original_forward(sd, x, (10, 10), 4)[0], atol=1e-4, rtol=0)
    # the inference loader: its front end, then the same network
    model = load_checkpoint(path, arch=tiny_arch.name).place("cpu", "fp32")
    wave = torch.randn(1, SR * 2) * 0.1
    spectrograms = AugmentMelSTFT().eval()(wave).unsqueeze(1)
    with torch.no_grad():
        torch.testing.assert_close(model(wave)[0], original_forward(live, spectrograms, (10, 10), 4)[0], atol=1e-4, rtol=0)


def test_safetensors_export_loads_as_its_checkpoint_with_record_and_swa(tmp_path):
    live, swa = tiny_state(seed=1), tiny_state(seed=2)
    state = {**{f"net.{k}": v for k, v in live.items()}, **{f"net_swa.{k}": v for k, v in swa.items()}}
    record = {"experiment": "mine", "models": models_config(), "class_names": CLASSES}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "passt": record}, ckpt)
    exported = write_safetensors(tmp_path / "model.safetensors", state, record)
    assert exported.read_bytes()[8:9] == b"{" and not list(tmp_path.glob("*.partial"))
    wave = torch.randn(1, SR * 2) * 0.1
    for use_swa in (False, True):
        a = load_checkpoint(ckpt, swa=use_swa).place("cpu", "fp32")
        b = load_checkpoint(exported, swa=use_swa).place("cpu", "fp32")
        assert b.class_names == CLASSES
        with torch.no_grad():
            assert torch.equal(a(wave)[0], b(wave)[0]) and torch.equal(a(wave)[1], b(wave)[1])
    # the README's export: the SWA weights as the network's own state dict, with the record
    swa_only = write_safetensors(tmp_path / "swa.safetensors", extract_state_dict(read_checkpoint(ckpt), swa=True),
                                 record)
    a, b = load_checkpoint(ckpt, swa=True).place("cpu", "fp32"), load_checkpoint(swa_only).place("cpu", "fp32")
    with torch.no_grad():
        assert torch.equal(a(wave)[0], b(wave)[0])
    # a network's own state dict, no record: loaded into a network built by the caller
    plain = write_safetensors(tmp_path / "weights.safetensors", live)
    net = load_weights(get_model(**TINY), plain)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in live.items())


def test_safetensors_writer_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        write_safetensors(tmp_path / "a.safetensors", tiny_state(), {"models": {"net": object()}})
    with pytest.raises(TypeError, match="not a tensor"):
        write_safetensors(tmp_path / "b.safetensors", {"w": torch.ones(2), "n": 3})
    assert not list(tmp_path.iterdir())


def test_damaged_safetensors_names_the_file(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", tiny_state())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=rf"{path} is corrupt or truncated"):
        read_checkpoint(path)


#: the network of ``tiny_model`` (config_updates.py) in ex_audioset.py
EXPERIMENT_NET = dict(arch="passt_deit_bd_p16_384", pretrained=False, n_classes=527, depth=1, embed_dim=32,
                      num_heads=2, input_fdim=64, input_tdim=200)


@pytest.mark.slow
def test_evaluate_only_and_fine_tuning_take_safetensors(mini_audioset, tmp_path):
    from ex_audioset import ex

    torch.manual_seed(0)
    state = {f"net.{k}": v for k, v in get_model(**EXPERIMENT_NET).state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "start.ckpt")
    write_safetensors(tmp_path / "start.safetensors", state)

    def run(command: str, checkpoint: str, seed: int, **trainer):
        cfg = data_config(mini_audioset)
        cfg["trainer"].update(trainer)
        cfg.update(output_dir=str(tmp_path / "out"), wandb={"mode": "disabled"}, models={"checkpoint": checkpoint},
                   seed=seed)
        return ex.run(command, named_configs=["tiny_model", "mini_train"], config_updates=cfg,
                      options={"--loglevel": "ERROR"})

    # other seeds, other initial weights: equal metrics only because both files were loaded
    evaluated = [run("evaluate_only", str(tmp_path / name), seed).result
                 for name, seed in (("start.ckpt", 1), ("start.safetensors", 2))]
    assert evaluated[0] == evaluated[1] and "val_mAP" in evaluated[0]
    tuned = run("main", str(tmp_path / "start.safetensors"), 3, max_epochs=1, limit_train_batches=1)
    assert tuned.status == "COMPLETED"


# ------------------------------------------------------------------- the real command lines
def _audio(tmp_path: Path) -> Path:
    import av

    path = tmp_path / "tone.wav"
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR * 2) / SR)).astype(np.float32)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def _inference(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "inference.py"), str(_audio(tmp_path)), "--device", "cpu",
                           "--workers", "0", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_cli_inference_refuses_a_payload(tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / "shared.pt", "state_dict", marker, tiny_state())
    proc = _inference(tmp_path, "--model", str(path), "--arch", TINY["arch"])
    assert proc.returncode == 2, proc.stderr
    assert f"error: Refused to load {path}: it names builtins.exec" in proc.stderr and "--trust-checkpoint" in proc.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_cli_inference_with_trust_checkpoint_warns_and_tags(tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / "mine.ckpt", "lightning", marker, tiny_state())
    proc = _inference(tmp_path, "--model", str(path), "--trust-checkpoint")
    assert proc.returncode == 0, proc.stderr
    assert "TrustedCheckpointWarning" in proc.stderr and "any code in the file runs now" in proc.stderr
    assert marker.exists() and "dog" in proc.stdout


@pytest.mark.slow
def test_cli_inference_takes_safetensors_with_their_class_names(tmp_path):
    state = {f"net.{k}": v for k, v in tiny_state().items()}
    path = write_safetensors(tmp_path / "model.safetensors", state,
                             {"experiment": "mine", "models": models_config(), "class_names": CLASSES})
    proc = _inference(tmp_path, "--model", str(path), "--json", "out.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out.json").read_text())["classes"] == CLASSES


def _experiment(mini, tmp_path: Path, command: str | None, *updates: str) -> subprocess.CompletedProcess:
    args = ([command] if command else []) + ["with", "tiny_model", "mini_train", *data_args(mini),
                                             "wandb.mode=disabled", f"output_dir={tmp_path / 'out'}", *updates]
    return run_cli(*args, threads=1)


def _refused(proc: subprocess.CompletedProcess, path: Path, marker: Path) -> None:
    assert proc.returncode != 0
    # a user's error: the message alone (sacred's -d shows the traceback)
    assert f"error: Refused to load {path}: it names builtins.exec" in proc.output, proc.output[-3000:]
    assert "Traceback" not in proc.output and not marker.exists()


@pytest.mark.slow
def test_cli_evaluate_only_refuses_a_payload_as_models_checkpoint(mini_audioset, tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / "shared.ckpt", "lightning", marker, tiny_state())
    _refused(_experiment(mini_audioset, tmp_path, "evaluate_only", f"models.checkpoint={path}"), path, marker)


@pytest.mark.slow
def test_cli_fine_tuning_refuses_a_payload_as_models_checkpoint(mini_audioset, tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / "deit.pth", "imagenet", marker, tiny_state())
    _refused(_experiment(mini_audioset, tmp_path, None, f"models.checkpoint={path}"), path, marker)


@pytest.mark.slow
def test_cli_ensemble_member_refuses_a_payload(mini_audioset, tmp_path):
    marker = tmp_path / "marker"
    path = payload_checkpoint(tmp_path / "member.pt", "state_dict", marker, tiny_state())
    member = {"arch": "passt_deit_bd_p16_384", "fstride": 10, "tstride": 10, "checkpoint": str(path)}
    _refused(_experiment(mini_audioset, tmp_path, "evaluate_only", f"models.ensemble={[member]!r}"), path, marker)


@pytest.mark.slow
def test_cli_resume_refuses_a_payload_as_ckpt_path(mini_audioset, tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    path = payload_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", "lightning", marker, tiny_state())
    _refused(_experiment(mini_audioset, tmp_path, None, f"ckpt_path={path}"), path, marker)


@pytest.mark.slow
def test_cli_evaluate_only_with_trust_checkpoint_warns_and_evaluates(mini_audioset, tmp_path):
    marker = tmp_path / "marker"
    torch.manual_seed(0)
    state = get_model(**EXPERIMENT_NET).state_dict()
    path = payload_checkpoint(tmp_path / "mine.pt", "state_dict", marker, state)
    proc = ok(_experiment(mini_audioset, tmp_path, "evaluate_only", f"models.checkpoint={path}",
                          "models.trust_checkpoint=True"))
    assert "TrustedCheckpointWarning" in proc.output and f"Loading {path} with a full unpickle" in proc.output
    assert marker.exists() and "Evaluation results" in proc.output

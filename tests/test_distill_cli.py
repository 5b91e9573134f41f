"""Knowledge distillation through the experiment commands: ``store_teacher_logits`` and training with ``kd``.

The teacher is a tiny PaSST checkpoint written here (random weights, with a head that gives every
class its own bias, so its outputs are far from an untrained student's). Runs go through sacred's
``ex.run`` in this process (seconds each); kills and DDP run the real command line in subprocesses
(``slow``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from experiment_cli import ROOT, data_args, data_config, run_cli, sacred_run
from sacred.observers import FileStorageObserver

from helpers.data.hdf5_dataset import Hdf5AudioDataset
from helpers.data.teacher_store import TeacherStore
from helpers.experiment.distill import teacher_models_config
from helpers.training.module import mel_forward
from models.build import build_mel, build_net
from models.passt import PaSST

PYTHON = sys.executable
#: the tiny_model network (64 mel bins, 2 s of time encodings) as a teacher of n classes
TEACHER_NET = dict(arch="passt_s_swa_p16_128_ap476", pretrained=False, fstride=10, tstride=10, input_fdim=64,
                   input_tdim=200, depth=1, embed_dim=32, num_heads=2)
QUIET = {"trainer": {"enable_progress_bar": False}, "wandb": {"mode": "disabled"}}


def write_teacher(path: Path, n_classes: int = 527, seed: int = 0) -> str:
    """A checkpoint as training writes it (the ``passt`` record rebuilds the network), random weights."""
    torch.manual_seed(seed)
    models = {"net": {**TEACHER_NET, "n_classes": n_classes}, "mel": {"n_mels": 64}, "ensemble": [],
              "checkpoint": None, "checkpoint_swa": False}
    net = build_net(models)
    with torch.no_grad():  # every class its own bias, and outputs that depend on the input
        net.head[1].bias.copy_(torch.randn(n_classes) * 3)
        net.head[1].weight.mul_(40)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "passt": {"experiment": "tests", "models": models}}, path)
    return str(path)


def merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run(ex, command: str, named: list[str], *updates: dict, observe: Path | None = None):
    cfg = {}
    for update in (QUIET, *updates):
        cfg = merged(cfg, update)
    if observe is not None:
        ex.observers.append(FileStorageObserver(str(observe)))
    try:
        return ex.run(command, named_configs=named, config_updates=cfg, options={"--loglevel": "ERROR"})
    finally:
        if observe is not None:
            ex.observers.pop()


def audioset(mini: dict, out: Path, **kd) -> dict:
    return merged(data_config(mini), {"output_dir": str(out), "seed": 3, "kd": kd})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """The AudioSet teacher (527 classes)."""
    return write_teacher(tmp_path_factory.mktemp("teacher") / "teacher.ckpt")


@pytest.fixture(scope="module")
def clean_store(mini_audioset, teacher, tmp_path_factory) -> str:
    from ex_audioset import ex

    folder = tmp_path_factory.mktemp("store")
    path = folder / "clean.h5"
    result = run(ex, "store_teacher_logits", ["tiny_model"], audioset(
        mini_audioset, folder, teacher=teacher, teacher_logits=str(path), teacher_precision="fp32")).result
    assert result["clips"] == 32 and result["bytes_per_clip"] > 1054  # 527 float16 logits per clip
    return str(path)


def teacher_outputs(teacher: str, waves: torch.Tensor) -> torch.Tensor:
    """The teacher on clean clips, fp32 (what evaluation runs)."""
    cfg = teacher_models_config(teacher)
    net, mel = build_net(cfg).eval(), build_mel({"n_mels": 64}).eval()
    with torch.no_grad():
        return net(mel_forward(mel, waves))[0]


def training_clips(mini: dict) -> tuple[list[str], torch.Tensor]:
    sets = [Hdf5AudioDataset(mini[k], clip_length=64000) for k in ("balanced_train_hdf5", "unbalanced_train_hdf5")]
    items = [ds[i] for ds in sets for i in range(len(ds))]
    return [name for _, name, _ in items], torch.stack([torch.from_numpy(w) for w, _, _ in items])


def test_stored_logits_equal_the_teacher_on_the_clean_clips(mini_audioset, teacher, clean_store):
    names, waves = training_clips(mini_audioset)
    expected = teacher_outputs(teacher, waves).numpy()
    assert expected.std() > 1  # a teacher with distinct outputs
    store = TeacherStore(clean_store)
    assert store.names.tolist() == names and store.valid.all() and store.draws == 0
    stored = np.stack([store.logits(i) for i in range(len(names))])
    np.testing.assert_allclose(stored, expected, rtol=2e-3, atol=2e-3)  # float16: 11 significant bits


@pytest.mark.precision  # a learning bound: it must hold in fp32 and in bf16
def test_a_student_trained_on_stored_logits_alone_approaches_the_teacher(mini_audioset, teacher, clean_store,
                                                                          tmp_path):
    from ex_audioset import ex

    names, waves = training_clips(mini_audioset)
    target = torch.sigmoid(teacher_outputs(teacher, waves))

    def distance(net) -> float:
        mel = build_mel({"n_mels": 64}).eval()
        with torch.no_grad():
            return float((torch.sigmoid(net.eval()(mel_forward(mel, waves))[0]) - target).abs().mean())

    untrained = []
    for seed in range(3):
        torch.manual_seed(seed)
        untrained.append(distance(build_net({"net": {**TEACHER_NET, "n_classes": 527}})))
    result = run(ex, "main", ["tiny_model", "kd"], audioset(mini_audioset, tmp_path, weight=1.0, teacher_logits=clean_store),
                 {"trainer": {"max_epochs": 4}, "lr": 0.003, "warm_up_len": 1, "use_mixup": False, "swa": False,
                  "basedataset": {"wavmix": False}, "models": {"mel": {"freqm": 0, "timem": 0}}})
    student = build_net({"net": {**TEACHER_NET, "n_classes": 527}, "checkpoint": result.info["last_checkpoint"]})
    trained = distance(student)
    # measured 0.066 against 0.38-0.40 (fp32 and bf16)
    assert trained < 0.5 * min(untrained), (trained, untrained)


@pytest.mark.precision  # bit-exact in either precision
@pytest.mark.parametrize("experiment", ["audioset", "fsd50k"])
def test_replayed_draws_give_the_student_the_teachers_inputs_bit_exactly(experiment, mini_audioset, mini_fsd50k,
                                                                         teacher, tmp_path):
    """Every input the student trains on is, bit for bit, one the teacher saw when its logits were stored
    (gain, roll, wavmix partner and weight, FSD50K's crops of longer clips, mel band shift, masks)."""
    if experiment == "audioset":
        from ex_audioset import ex
        data = data_config(mini_audioset)
    else:
        from ex_fsd50k import ex
        data = {"basedataset": {"base_dir": mini_fsd50k["base_dir"], "clip_length": 2},
                "datasets": {"training": {"batch_size": 4, "num_workers": 0}, "test": {"num_workers": 0}}}
    seen: dict[str, list[str]] = {"teacher": [], "student": []}

    def record(module, args):
        if isinstance(module, PaSST):
            for example in args[0]:
                seen["student" if module.training else "teacher"].append(
                    hashlib.sha1(example.detach().float().contiguous().numpy().tobytes()).hexdigest())

    store = str(tmp_path / "draws.h5")
    if experiment == "fsd50k":
        teacher = write_teacher(tmp_path / "teacher200.ckpt", n_classes=200)
    common = merged(data, {"output_dir": str(tmp_path), "seed": 3,
                           "kd": {"teacher": teacher, "teacher_logits": store, "draws": 2}})
    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        run(ex, "store_teacher_logits", ["tiny_model", "kd_consistent"], common)
        teacher_inputs = set(seen["teacher"])
        seen["teacher"].clear()
        run(ex, "main", ["tiny_model", "kd_consistent", "mini_train"], common,
            {"trainer": {"max_epochs": 1, "limit_train_batches": 4, "limit_val_batches": 1}, "swa": False})
    finally:
        hook.remove()
    assert len(teacher_inputs) == 2 * len(TeacherStore(store))  # every clip's two draws are different inputs
    assert len(seen["student"]) == 16  # 4 batches of 4
    assert set(seen["student"]) <= teacher_inputs


@pytest.mark.parametrize("experiment", ["esc50", "openmic", "fsd50k", "folder"])
def test_every_experiment_stores_its_teacher_and_distils(experiment, mini_esc50, mini_openmic, mini_fsd50k,
                                                         tmp_path):
    """The store and training on every dataset's task: clean stored logits (ESC-50, own data: softmax) or
    replayed draws (OpenMIC: masked, FSD50K: crops)."""
    import importlib

    from downstream_data import own_folder

    ex = importlib.import_module(f"ex_{experiment}").ex
    loaders = {"training": {"batch_size": 4, "num_workers": 0}, "test": {"num_workers": 0}}
    data = {"esc50": {"base_dir": mini_esc50["base_dir"], "clip_length": 1},
            "openmic": {"base_dir": mini_openmic["base_dir"], "clip_length": 1},
            "fsd50k": {"base_dir": mini_fsd50k["base_dir"], "clip_length": 2}}.get(experiment)
    if data is None:
        audio_dir, csv_path = own_folder(tmp_path / "data", split_column="split")
        data = {"audio_dir": str(audio_dir), "csv": str(csv_path), "clip_length": 1}
    common = {"basedataset": data, "datasets": loaders, "output_dir": str(tmp_path), "seed": 1}
    classes = {"esc50": 50, "openmic": 20, "fsd50k": 200, "folder": 4}[experiment]
    draws = 1 if experiment in ("openmic", "fsd50k") else 0
    store = str(tmp_path / "teacher.h5")
    kd = {"kd": {"teacher_logits": store, "draws": draws, "replay": bool(draws), "weight": 0.7}}
    stored = run(ex, "store_teacher_logits", ["tiny_model"], common, kd).result
    assert TeacherStore(store).n_classes == classes and stored["clips"] == len(TeacherStore(store))
    run(ex, "main", ["tiny_model", "mini_train"], common, kd,
        {"trainer": {"max_epochs": 1, "limit_val_batches": 1}, "swa": False},
        observe=tmp_path / "sacred")
    metrics = sacred_run(tmp_path / "sacred")["metrics"]
    for key in ("train_kd_loss", "train_label_loss"):
        assert np.isfinite(metrics[key]["values"]).all() and metrics[key]["values"][0] > 0, key


# --------------------------------------------------------------------------------- subprocesses
def store_args(mini: dict, path: Path, out: Path, *more: str) -> list[str]:
    return ["store_teacher_logits", "with", "tiny_model", *data_args(mini), "seed=3", "wandb.mode=disabled",
            f"kd.teacher_logits={path}", "kd.draws=2", "kd.topk=16", "kd.chunk_rows=8", f"output_dir={out}", *more]


def same_store(a: str, b: str) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)
        keys = []
        fa.visit(lambda k: keys.append(k) if isinstance(fa[k], h5py.Dataset) else None)
        assert keys and sorted(keys) == sorted(k for k in keys if k in fb)
        for key in keys:
            a, b = fa[key][()], fb[key][()]
            if a.dtype.kind == "O":  # the names
                assert a.tolist() == b.tolist(), key
            else:  # bit for bit (a draw that did not happen is NaN, in the records too)
                assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), key


@pytest.fixture(scope="module")
def reference_store(mini_audioset, teacher, tmp_path_factory) -> str:
    """A store of recorded draws and top-k logits made in one uninterrupted process."""
    from ex_audioset import ex

    folder = tmp_path_factory.mktemp("reference")
    path = folder / "draws.h5"
    run(ex, "store_teacher_logits", ["tiny_model"], audioset(mini_audioset, folder, teacher=teacher,
        teacher_logits=str(path), draws=2, topk=16, chunk_rows=8))
    return str(path)


@pytest.mark.slow
def test_a_killed_store_continues_to_the_same_file(mini_audioset, teacher, reference_store, tmp_path):
    path = tmp_path / "draws.h5"
    killed = subprocess.run([PYTHON, str(ROOT / "tests" / "sigkill_teacher_store.py"), "2",
                             *store_args(mini_audioset, path, tmp_path, f"kd.teacher={teacher}")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    parts = sorted(p.name for p in (tmp_path / "draws.h5.parts").iterdir())
    assert parts == ["chunk-000000.npz", "chunk-000001.npz", "job.json"] and not path.exists()
    again = run_cli(*store_args(mini_audioset, path, tmp_path, f"kd.teacher={teacher}"), threads=1)
    assert again.returncode == 0, again.output[-3000:]
    assert "2 done before" in again.output
    same_store(str(path), reference_store)
    assert not (tmp_path / "draws.h5.parts").exists()


@pytest.mark.slow
def test_two_ddp_processes_store_the_same_file_as_one(mini_audioset, teacher, reference_store, tmp_path):
    path = tmp_path / "draws.h5"
    proc = run_cli(*store_args(mini_audioset, path, tmp_path, f"kd.teacher={teacher}", "trainer.accelerator=cpu"),
                   ddp=2, threads=1, timeout=400)
    assert proc.returncode == 0, proc.output[-4000:]
    assert "'processes': 2" in proc.output and "'computed_chunks': 4" in proc.output  # 32 clips, chunks of 8
    same_store(str(path), reference_store)


@pytest.mark.slow
@pytest.mark.precision  # bit-exact in either precision
def test_killed_training_with_distillation_resumes_to_the_same_weights(mini_audioset, clean_store, tmp_path):
    from ex_audioset import ex

    kd = {"kd": {"weight": 0.5, "teacher_logits": clean_store}}
    recipe = {"checkpointing": {"last_every_n_steps": 2}, "datasets": {"training": {"batch_size": 4}}}
    reference = run(ex, "main", ["tiny_model", "mini_train"], audioset(mini_audioset, tmp_path / "ref"), kd, recipe)
    out = tmp_path / "killed"
    killed = subprocess.run([PYTHON, str(ROOT / "tests" / "sigkill_during_save.py"), "8", "with", "mini_train",
                             "tiny_model", *data_args(mini_audioset), "seed=3", "checkpointing.last_every_n_steps=2",
                             "wandb.mode=disabled", "kd.weight=0.5", f"kd.teacher_logits={clean_store}",
                             f"output_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (last,) = out.glob("audioset/*/checkpoints/last.ckpt")
    resumed = run(ex, "main", ["tiny_model", "mini_train"], audioset(mini_audioset, out), kd, recipe,
                  {"ckpt_path": str(last)})
    after = torch.load(last, map_location="cpu", weights_only=True)
    ref = torch.load(reference.info["last_checkpoint"], map_location="cpu", weights_only=True)
    assert after["global_step"] == ref["global_step"] == 10
    for key, value in ref["state_dict"].items():
        assert torch.equal(after["state_dict"][key], value), key
    assert resumed.result == reference.result

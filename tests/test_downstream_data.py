"""The downstream datasets, tasks and experiments without training: layouts made by the original's
scripts, the original's defaults, mixing, masked metrics, bad input, released checkpoints."""

from __future__ import annotations

import dataclasses
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from downstream_data import own_folder
from original_layout import original_forward, original_state_dict
from sklearn.metrics import average_precision_score

from helpers.data.audio_io import encode_mp3
from helpers.training.mixup import draw_mixup
from helpers.training.tasks import MaskedMultiLabelTask, MultiClassTask, MultiLabelTask
from models.build import get_model
from models.hub_cache import cache_path
from models.passt import patch_grid
from models.passt_weights import load_weights
from models.registry import ARCHS
from openmic.dataset import mix_masked_targets

QUIET = {"--loglevel": "ERROR"}


def _run(ex, command="print_config", named=(), **updates):
    return ex.run(command, named_configs=list(named), config_updates=updates, options=QUIET)


# ------------------------------------------------------------------------------ original defaults
def test_defaults_are_the_originals():
    from ex_esc50 import ex as esc50
    from ex_fsd50k import ex as fsd50k
    from ex_openmic import ex as openmic

    expected = {  # from the original's ex_*.py and <dataset>/dataset.py
        esc50: dict(n=50, st=10, sf=3, freqm=48, timem=80, epochs=10, batch=12, test_batch=20, swa=(2, 1),
                    ramp=(50, 50), wavmix=False),
        openmic: dict(n=20, st=40, sf=4, freqm=48, timem=192, epochs=10, batch=6, test_batch=20, swa=(2, 1),
                      ramp=(50, 50), wavmix=True),
        fsd50k: dict(n=200, st=10, sf=4, freqm=0, timem=0, epochs=50, batch=12, test_batch=10, swa=(10, 3),
                     ramp=(10, 10), wavmix=True),
    }
    for ex, e in expected.items():
        cfg = _run(ex).config
        net, mel = cfg["models"]["net"], cfg["models"]["mel"]
        assert (net["n_classes"], net["s_patchout_t"], net["s_patchout_f"]) == (e["n"], e["st"], e["sf"])
        assert net["arch"] == "passt_s_kd_p16_128_ap486" and net["pretrained"]
        assert (mel["freqm"], mel["timem"]) == (e["freqm"], e["timem"])
        assert cfg["lr"] == 1e-5 and cfg["trainer"]["max_epochs"] == e["epochs"] and cfg["warm_up_len"] == 5
        assert (cfg["ramp_down_start"], cfg["ramp_down_len"]) == e["ramp"]
        assert (cfg["swa_epoch_start"], cfg["swa_freq"]) == e["swa"] and cfg["swa"]
        assert cfg["use_mixup"] and cfg["mixup_alpha"] == 0.3
        assert cfg["datasets"]["training"]["batch_size"] == e["batch"]
        test_loader = cfg["datasets"]["valid"] if ex is fsd50k else cfg["datasets"]["test"]
        assert test_loader["batch_size"] == e["test_batch"]
        data = cfg["basedataset"]
        assert data["wavmix"] == e["wavmix"] and data["gain_augment"] == 7 and data["roll"]
        assert data["roll_conf"] == {"axis": 1, "shift": None, "shift_range": 50}
    assert _run(esc50).config["basedataset"]["fold"] == 1


def test_the_original_readme_command_lines_are_accepted():
    from ex_esc50 import ex as esc50
    from ex_fsd50k import ex as fsd50k
    from ex_openmic import ex as openmic

    cfg = _run(esc50, **{"models": {"net": {"s_patchout_t": 10, "s_patchout_f": 5}}, "basedataset": {"fold": 1}}).config
    assert cfg["models"]["net"]["s_patchout_f"] == 5 and cfg["basedataset"]["fold"] == 1
    assert _run(openmic, trainer={"precision": 16}).config["trainer"]["precision"] == 16
    cfg = _run(fsd50k, named=["passt_s_swa_p16_s16_128_ap473"], trainer={"precision": 16},
               models={"net": {"s_patchout_t": 10, "s_patchout_f": 1}}).config
    assert (cfg["models"]["net"]["arch"], cfg["models"]["net"]["fstride"], cfg["models"]["net"]["n_classes"]) == (
        "passt_s_swa_p16_s16_128_ap473", 16, 200)
    cfg = _run(fsd50k, named=["variable_eval"]).config
    assert cfg["basedataset"]["variable_eval"] and cfg["datasets"]["eval"]["batch_size"] == 1
    with pytest.raises(ValueError, match="Did you mean datasets.valid.batch_size"):
        _run(fsd50k, datasets={"valid": {"batch_sise": 3}})


# -------------------------------------------------------------------------------------- mixing
def test_masked_task_loss_is_the_originals_with_and_without_mixup():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 20), torch.rand(6, 20)
    masks = (torch.rand(6, 20) > 0.5).float()
    targets = torch.cat([labels, masks], dim=1)
    task = MaskedMultiLabelTask()
    hard = (labels > 0.5).float()
    original = (F.binary_cross_entropy_with_logits(logits, hard, reduction="none") * masks).mean()
    torch.testing.assert_close(task.loss(logits, targets), original)
    perm, lam = draw_mixup(6, 0.3)
    mixed = hard * lam[:, None] + hard[perm] * (1 - lam[:, None])  # the original: its own mask, unmixed
    original = (F.binary_cross_entropy_with_logits(logits, mixed, reduction="none") * masks).mean()
    torch.testing.assert_close(task.loss(logits, targets, perm, lam), original)


def test_multiclass_mixup_loss_is_the_originals_for_indices_and_one_hot():
    torch.manual_seed(1)
    logits, y = torch.randn(5, 50), torch.randint(0, 50, (5,))
    perm, lam = draw_mixup(5, 0.3)
    original = (F.cross_entropy(logits, y, reduction="none") * lam
                + F.cross_entropy(logits, y[perm], reduction="none") * (1 - lam)).mean()
    task = MultiClassTask()
    torch.testing.assert_close(task.loss(logits, y, perm, lam), original)
    torch.testing.assert_close(task.loss(logits, F.one_hot(y, 50).float(), perm, lam), original)
    ml = MultiLabelTask()
    t = (torch.rand(5, 50) > 0.8).float()
    mixed = t * lam[:, None] + t[perm] * (1 - lam[:, None])
    torch.testing.assert_close(ml.loss(logits, t, perm, lam), F.binary_cross_entropy_with_logits(logits, mixed))


def test_openmic_wavmix_masks_labels_before_mixing_and_merges_masks():
    rng = np.random.default_rng(0)
    t1, t2 = rng.random(40).astype(np.float32), rng.random(40).astype(np.float32)
    t1[20:], t2[20:] = (rng.random(20) > 0.5), (rng.random(20) > 0.5)
    lam = 0.7
    # the original: y[:20] *= (y[20:] > 0.5); mix all 40; masks replaced by their max
    y1, y2 = t1.copy(), t2.copy()
    m1, m2 = (y1[20:] > 0.5).astype(np.float32), (y2[20:] > 0.5).astype(np.float32)
    y1[:20] *= m1
    y2[:20] *= m2
    expected = y1 * lam + y2 * (1 - lam)
    expected[20:] = np.maximum(m1, m2)
    np.testing.assert_allclose(mix_masked_targets(t1, t2, lam), expected, rtol=1e-6)


# ------------------------------------------------------------------------------------- metrics
def test_masked_task_metrics_and_target_check():
    rng = np.random.default_rng(3)
    labels, masks = rng.random((30, 20)).astype(np.float32), (rng.random((30, 20)) > 0.4).astype(np.float32)
    logits = torch.randn(30, 20)
    metrics = MaskedMultiLabelTask().metrics(logits, torch.from_numpy(np.concatenate([labels, masks], 1)))
    scores = torch.sigmoid(logits).numpy()
    expected = [average_precision_score(labels[:, c] > 0.5, scores[:, c], sample_weight=masks[:, c]) for c in range(20)]
    assert metrics["mAP"] == pytest.approx(np.mean(expected)) and metrics["classes_scored"] == 20
    with pytest.raises(ValueError, match="40 values, 20 labels followed by 20 masks"):
        MaskedMultiLabelTask().check_targets(torch.zeros(20), 20)


# -------------------------------------------------------------- files made by the original scripts
def test_openmic_and_fsd50k_files_written_as_the_original_scripts_do_load(tmp_path):
    from fsd50k.dataset import open_file as fsd50k_file
    from openmic.dataset import open_file as openmic_file

    mp3 = encode_mp3(np.sin(np.arange(32000) / 5).astype(np.float32) * 0.3, 32000)
    vlen = h5py.vlen_dtype(np.dtype("uint8"))
    openmic_target = np.random.default_rng(0).random((2, 40)).astype(np.float32)
    fsd_target = np.packbits(np.eye(200, dtype=np.int32)[[3, 199]], axis=-1)
    for path, target in ((tmp_path / "openmic_test.csv_mp3.hdf", openmic_target),
                         (tmp_path / "FSD50K.eval_mp3.hdf", fsd_target)):
        with h5py.File(path, "w") as hf:  # the original pack(): fixed-size datasets filled row by row
            names = hf.create_dataset("audio_name", shape=(2,), dtype="S20")
            waves = hf.create_dataset("mp3", shape=(2,), dtype=vlen)
            targets = hf.create_dataset("target", shape=target.shape, dtype=target.dtype)
            for i in range(2):
                names[i], waves[i], targets[i] = f"00000{i}_3840.mp3", np.frombuffer(mp3, np.uint8), target[i]
    ds = openmic_file(str(tmp_path / "openmic_test.csv_mp3.hdf"), 20, 32000, 10, False, None)
    wave, name, target = ds[1]
    assert wave.shape == (1, 320000) and name == "000001_3840.mp3"
    np.testing.assert_array_equal(target, openmic_target[1])
    ds = fsd50k_file(str(tmp_path / "FSD50K.eval_mp3.hdf"), 200, 32000, None, False, None)
    wave, _, target = ds[1]
    assert abs(wave.shape[1] - 32000) < 2000 and np.flatnonzero(target).tolist() == [199]
    with pytest.raises(ValueError, match="does not fit n_classes=20"):
        openmic_file(str(tmp_path / "openmic_test.csv_mp3.hdf"), 10, 32000, 10, False, None)


def test_fsd50k_crops_longer_clips_at_random_and_variable_eval_keeps_them_whole(mini_fsd50k):
    from ex_fsd50k import ex

    base = {"basedataset": {"base_dir": mini_fsd50k["base_dir"], "clip_length": 1}}
    from fsd50k.dataset import get_eval_set

    captured = {}

    @ex.command
    def _sets(_config):
        captured["eval"] = get_eval_set()

    try:
        torch.manual_seed(0)
        _run(ex, "_sets", **base)
        clip = captured["eval"][4][0]  # a 2.6 s clip
        starts = set()
        for _ in range(6):
            crop = captured["eval"][4][0]
            assert crop.shape == (1, 32000)
            starts.add(float(crop[0, 0]))
        assert len(starts) > 1  # different crops
        _run(ex, "_sets", named=["variable_eval"], **base)
        lengths = [captured["eval"][i][0].shape[1] for i in range(5)]
    finally:
        ex.commands.pop("_sets")
    assert clip.shape == (1, 32000) and max(lengths) > 2.5 * 32000 and min(lengths) < 0.7 * 32000


# ------------------------------------------------------------------------------------ bad input
def test_esc50_bad_fold_unknown_target_and_missing_files(mini_esc50, tmp_path):
    from esc50.dataset import build_set, fold_clips

    meta = f"{mini_esc50['base_dir']}meta/esc50.csv"
    with pytest.raises(ValueError, match=r"basedataset.fold=7 is not a fold .* expected one of 1, 2, 3, 4, 5"):
        fold_clips(meta, 50, 7, train=True)
    with pytest.raises(ValueError, match=r"target 3 is not a class this config knows: expected 0..2 "
                                         r"\(basedataset.n_classes=3\)"):
        fold_clips(meta, 3, 1, train=True)
    clips = fold_clips(meta, 50, 1, train=False)
    with pytest.raises(FileNotFoundError, match="(?s)8 of 8 audio files not found.*download_preprocess"):
        build_set(clips, str(tmp_path), 50, 32000, 5)
    ds = build_set(clips, f"{mini_esc50['base_dir']}audio_32k/", 50, 32000, 5)
    wave, name, target = ds[0]
    assert wave.shape == (1, 160000) and target.shape == (50,) and target.sum() == 1 and name.startswith("1-")


def test_own_folder_bad_files_unknown_labels_and_multi_label(tmp_path):
    from folder.dataset import build_set, read_table

    audio_dir, csv_path = own_folder(tmp_path / "multi", per_class=3, multi_label=True)
    cfg = {"audio_dir": str(audio_dir), "csv": str(csv_path), "file_column": "filename", "label_column": "label",
           "label_separator": ",", "classes": None, "multi_label": None, "split_column": None, "test_split": None,
           "holdout": 0.25, "split_seed": 0, "skip_bad_files": False, "sample_rate": 32000, "clip_length": 1,
           "random_crop": False, "gain_augment": 0, "roll": False, "roll_conf": None, "wavmix": False,
           "wavmix_beta": 2, "wavmix_rate": 0.5, "strict_decoding": False, "corrupt_log": None}
    table = read_table(cfg)
    assert table.multi_label and table.classes == ["bird", "cat", "dog", "rain"] and table.is_test.sum() == 3
    test = build_set(cfg, train=False)
    assert len(test) == 3 and all(test[i][0].shape == (1, 32000) for i in range(3))
    assert max(test.targets.sum(axis=1)) <= 2 and len(build_set(cfg, train=True)) == 9

    with pytest.raises(ValueError, match=r"labels \['rain'\] are not classes of this config; expected one of"):
        read_table({**cfg, "classes": ["bird", "cat", "dog"]})
    (audio_dir / "clip001.mp3").write_bytes(b"this is no audio")
    (audio_dir / "clip002.flac").unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_set({**cfg, "holdout": 0.99}, train=False)
    message = str(err.value)
    assert "2 of 12 files" in message and "clip001.mp3: not readable as audio" in message
    assert "clip002.flac: file not found" in message and "skip_bad_files=True" in message
    kept = build_set({**cfg, "holdout": 0.99, "skip_bad_files": True}, train=False)
    assert len(kept) == 12 - 2  # holdout 0.99: all 12 clips, 2 of them bad


def test_own_folder_picks_the_task_from_the_csv(tmp_path):
    from ex_folder import ex

    audio_dir, csv_path = own_folder(tmp_path / "single", per_class=2)
    data = {"audio_dir": str(audio_dir), "csv": str(csv_path), "clip_length": 1}
    cfg = _run(ex, basedataset=data).config
    assert cfg["models"]["net"]["n_classes"] == 4
    assert _run(ex, basedataset=data, models={"net": {"n_classes": 7}}).config["models"]["net"]["n_classes"] == 7
    updates = {"basedataset": data, "wandb": {"mode": "disabled"}, "trainer": {"enable_progress_bar": False},
               "datasets": {"test": {"num_workers": 0}}, "output_dir": str(tmp_path / "out")}
    result = ex.run("evaluate_only", named_configs=["tiny_model"], config_updates=updates, options=QUIET).result
    assert "val_acc" in result and result["val_examples"] == 2  # one label per clip: accuracy
    audio_dir, csv_path = own_folder(tmp_path / "multi", per_class=2, multi_label=True)
    updates["basedataset"] = {**data, "audio_dir": str(audio_dir), "csv": str(csv_path)}
    result = ex.run("evaluate_only", named_configs=["tiny_model"], config_updates=updates, options=QUIET).result
    assert "val_mAP" in result  # several labels per clip: mAP


# ------------------------------------------------------------------------------ released weights
@pytest.mark.parametrize(("alias", "n_classes", "stride"), [("openmic", 20, 10), ("fsd50k", 200, 10),
                                                             ("fsd50k-n", 200, 16)])
def test_released_downstream_checkpoints_load(alias, n_classes, stride, monkeypatch, tmp_path):
    """Files in the release layout (written here, tiny) load into the registry's architecture unchanged."""
    from models.registry import resolve_arch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    arch = resolve_arch(alias)
    assert (arch.n_classes, arch.fstride, arch.tstride) == (n_classes, stride, stride)
    monkeypatch.setitem(ARCHS, arch.name, dataclasses.replace(arch, embed_dim=64, depth=2, num_heads=4))
    sd = original_state_dict(n_classes=n_classes, grid=patch_grid(128, 998, stride, stride))
    path = cache_path(arch.url)
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the release fits its registry entry exactly
        model = get_model(arch=alias, n_classes=n_classes, fstride=stride, tstride=stride).eval()
    x = torch.randn(1, 1, 128, 998)
    torch.testing.assert_close(model(x)[0], original_forward(sd, x, (stride, stride), 4)[0], atol=1e-4, rtol=0)


def test_released_openmic_model_evaluates_through_its_named_config(mini_openmic, monkeypatch, tmp_path):
    from ex_openmic import ex

    name = "openmic_passt_s_f128_10sec_p16_s10_ap85"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(ARCHS, name, dataclasses.replace(ARCHS[name], embed_dim=64, depth=2, num_heads=4))
    cache_path(ARCHS[name].url).parent.mkdir(parents=True)
    torch.save(original_state_dict(n_classes=20), cache_path(ARCHS[name].url))
    result = ex.run("evaluate_only", named_configs=[name], config_updates={
        "basedataset": {"base_dir": mini_openmic["base_dir"], "clip_length": 1}, "wandb": {"mode": "disabled"},
        "datasets": {"test": {"num_workers": 0}}, "trainer": {"enable_progress_bar": False},
        "output_dir": str(tmp_path / "out")}, options=QUIET).result
    assert result["val_examples"] == 8 and 0 <= result["val_mAP"] <= 1


def test_esc50_fold_checkpoint_of_the_release_loads_as_a_local_file(mini_esc50, tmp_path):
    from ex_esc50 import ex

    sd = original_state_dict(n_classes=50)  # a plain state dict, as in release v.0.0.6
    path = tmp_path / "esc50-passt-s-n-f128-p16-s10-fold1-acc.967.pt"
    torch.save(sd, path)
    tiny = {"depth": 2, "embed_dim": 64, "num_heads": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_weights(get_model(pretrained=False, n_classes=50, **tiny), path).eval()
    x = torch.randn(1, 1, 128, 500)
    torch.testing.assert_close(model(x)[0], original_forward(sd, x, (10, 10), 4)[0], atol=1e-4, rtol=0)
    result = ex.run("evaluate_only", config_updates={
        "models": {"checkpoint": str(path), "net": tiny}, "basedataset": {"base_dir": mini_esc50["base_dir"]},
        "wandb": {"mode": "disabled"}, "datasets": {"test": {"num_workers": 0}},
        "trainer": {"enable_progress_bar": False}, "output_dir": str(tmp_path / "out")}, options=QUIET).result
    assert result["val_examples"] == 8 and 0 <= result["val_acc"] <= 1

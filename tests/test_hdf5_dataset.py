"""Tests of helpers/hdf5_dataset.py, helpers/waveform_augment.py and audioset/dataset.py."""

from __future__ import annotations

import csv
import pickle
import warnings

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from audioset import dataset as audioset_dataset
from helpers.data.audio_io import encode_mp3
from helpers.data.corrupt_clips import CorruptClipError, read_corrupt_log
from helpers.data.hdf5_dataset import Hdf5AudioDataset, open_read_only, preload_hdf5

SR = 32000


def write_hdf5(path, names, mp3s, labels, n_classes, name_dtype="S20", packed=True):
    """An HDF5 file in the original layout (optionally vlen names / unpacked bool targets)."""
    dense = np.zeros((len(names), n_classes), dtype=bool)
    for row, labs in enumerate(labels):
        dense[row, labs] = True
    with h5py.File(path, "w") as hf:
        if name_dtype == "vlen":
            hf.create_dataset("audio_name", data=names, dtype=h5py.string_dtype("utf-8"))
        else:
            hf.create_dataset("audio_name", data=np.asarray([n.encode() for n in names], dtype=name_dtype))
        ds = hf.create_dataset("mp3", shape=(len(names),), dtype=h5py.vlen_dtype(np.uint8))
        for i, data in enumerate(mp3s):
            ds[i] = np.frombuffer(data, dtype=np.uint8)
        hf.create_dataset("target", data=np.packbits(dense, axis=-1) if packed else dense)
    return path


def tone_mp3(freq, seconds=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return encode_mp3((0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


@pytest.fixture
def small_file(tmp_path):
    """4 clips, the second one corrupt."""
    mp3s = [tone_mp3(300), b"this is not an mp3" * 100, tone_mp3(600), tone_mp3(900)]
    names = ["Ya.mp3", "Ybroken.mp3", "Yc.mp3", "Yd.mp3"]
    return write_hdf5(tmp_path / "small.hdf", names, mp3s, [[0], [1], [2, 5], [9]], n_classes=10)


def expected_labels(segments_csv):
    """ytid -> label indices, from a mini_audioset segment CSV (/m/fakeNNN -> NNN)."""
    out = {}
    with open(segments_csv, newline="") as fh:
        for row in csv.reader(fh, skipinitialspace=True):
            if row and not row[0].startswith("#"):
                out[row[0]] = sorted(int(m[len("/m/fake") :]) for m in row[3].split(","))
    return out


# --------------------------------------------------------------------------- Hdf5AudioDataset


def test_items_have_shape_dtype_name_and_csv_labels(mini_audioset):
    ds = Hdf5AudioDataset(mini_audioset["balanced_train_hdf5"], clip_length=2 * SR, n_classes=527)
    labels = expected_labels(mini_audioset["segments_csv"]["balanced_train_segments"])
    assert len(ds) == 16
    for i in range(len(ds)):
        wave, name, target = ds[i]
        assert wave.shape == (1, 2 * SR) and wave.dtype == np.float32
        assert target.shape == (527,) and target.dtype == np.float32
        assert name.startswith("Y") and name.endswith(".mp3")
        assert np.flatnonzero(target).tolist() == labels[name[1:-4]]
        # 1.5 s of audio, then zero padding up to 2 s.
        assert np.abs(wave[0, : int(1.4 * SR)]).max() > 0.05
        assert np.all(wave[0, int(1.55 * SR) :] == 0)


def test_clips_are_cut_to_clip_length(mini_audioset):
    ds = Hdf5AudioDataset(mini_audioset["eval_hdf5"], clip_length=SR // 2)
    assert ds[0][0].shape == (1, SR // 2)
    assert ds[-1][0].shape == (1, SR // 2)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_vlen_names_and_unpacked_bool_targets_are_read(tmp_path):
    names = ["Yfirst.mp3", "Ysecond-name-longer-than-20.mp3"]
    mp3s = [tone_mp3(400), tone_mp3(500)]
    path = write_hdf5(tmp_path / "v.hdf", names, mp3s, [[3], [0, 7]], n_classes=12, name_dtype="vlen", packed=False)
    ds = Hdf5AudioDataset(path, clip_length=SR // 4, n_classes=12)
    wave, name, target = ds[1]
    assert name == "Ysecond-name-longer-than-20.mp3"
    assert np.flatnonzero(target).tolist() == [0, 7]


def test_corrupt_clip_is_skipped_counted_and_logged(small_file, tmp_path):
    log = tmp_path / "corrupt.tsv"
    ds = Hdf5AudioDataset(small_file, clip_length=SR // 4, n_classes=10, corrupt_log=log)
    with pytest.warns(RuntimeWarning) as record:
        wave, name, target = ds[1]
    message = str(record[0].message)
    assert "Ybroken.mp3" in message and "index 1" in message and str(small_file) in message
    # Deterministic replacement: the next clip.
    assert name == "Yc.mp3" and np.flatnonzero(target).tolist() == [2, 5]
    assert ds.num_corrupt == 1
    assert [(i, n) for i, n, _ in ds.corrupt_entries] == [(1, "Ybroken.mp3")]
    assert [(i, n) for i, n, _ in read_corrupt_log(log)] == [(1, "Ybroken.mp3")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # good clips do not warn
        assert ds[0][1] == "Ya.mp3"
    assert ds.num_corrupt == 1


def test_strict_decoding_raises_on_corrupt_clip(small_file):
    ds = Hdf5AudioDataset(small_file, clip_length=SR // 4, n_classes=10, strict_decoding=True)
    assert ds[0][1] == "Ya.mp3"
    with pytest.raises(CorruptClipError, match="Ybroken.mp3"):
        ds[1]


def test_a_file_of_only_corrupt_clips_fails_loudly(tmp_path):
    path = write_hdf5(tmp_path / "bad.hdf", ["Y1", "Y2", "Y3"], [b"x" * 100] * 3, [[0]] * 3, n_classes=4)
    ds = Hdf5AudioDataset(path, clip_length=100, n_classes=4, max_skips=5)
    with pytest.warns(RuntimeWarning), pytest.raises(CorruptClipError, match="corrupt clips in a row"):
        ds[0]


def test_missing_file_names_path_and_prepare_command(tmp_path):
    missing = tmp_path / "nope" / "balanced_train_segments_mp3.hdf"
    with pytest.raises(FileNotFoundError) as err:
        Hdf5AudioDataset(missing)
    assert str(missing) in str(err.value) and "prepare script" in str(err.value)
    with pytest.raises(FileNotFoundError, match="python make_it.py"):
        Hdf5AudioDataset(missing, prepare_hint="python make_it.py")
    # The AudioSet constructors name the exact command for this split.
    with pytest.raises(FileNotFoundError) as err:
        audioset_dataset.build_training_set([missing])
    text = str(err.value)
    assert str(missing) in text
    assert "--segments balanced_train_segments.csv" in text and f"--out {missing}" in text


def test_n_classes_mismatch_is_a_clear_error_at_construction(mini_audioset):
    with pytest.raises(ValueError, match="n_classes=200"):
        Hdf5AudioDataset(mini_audioset["eval_hdf5"], n_classes=200)
    # 521..528 share the packed width 66, so only the exact label count is meaningful; others fail.
    with pytest.raises(ValueError, match="does not fit"):
        Hdf5AudioDataset(mini_audioset["eval_hdf5"], n_classes=10)


def test_layout_errors_name_the_file(tmp_path):
    path = tmp_path / "wrong.hdf"
    with h5py.File(path, "w") as hf:
        hf.create_dataset("mp3", shape=(2,), dtype=h5py.vlen_dtype(np.uint8))
    with pytest.raises(ValueError, match="missing HDF5 dataset"):
        Hdf5AudioDataset(path)


def test_handle_is_lazy_and_never_pickled(mini_audioset):
    ds = Hdf5AudioDataset(mini_audioset["eval_hdf5"], clip_length=SR)
    assert ds._hf is None  # nothing opened at construction
    first = ds[0]
    assert ds._hf is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._hf is None
    np.testing.assert_array_equal(clone[0][0], first[0])


def test_dataloader_with_worker_processes(mini_audioset):
    ds = Hdf5AudioDataset(mini_audioset["eval_hdf5"], clip_length=SR)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [torch.Size([4, 1, SR])] * 2
    assert sorted(sum((list(b[1]) for b in batches), [])) == sorted(ds.name(i) for i in range(8))
    assert batches[0][2].shape == (4, 527) and batches[0][2].dtype == torch.float32


def test_corrupt_log_collects_failures_from_worker_processes(small_file, tmp_path):
    log = tmp_path / "corrupt.tsv"
    ds = Hdf5AudioDataset(small_file, clip_length=SR // 4, n_classes=10, corrupt_log=log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning is raised in the workers
        names = [name for batch in DataLoader(ds, batch_size=1, num_workers=2) for name in batch[1]]
    assert names == ["Ya.mp3", "Yc.mp3", "Yc.mp3", "Yd.mp3"]
    assert ds.num_corrupt == 0  # this process decoded nothing; the workers wrote the log
    assert [(i, n) for i, n, _ in read_corrupt_log(log)] == [(1, "Ybroken.mp3")]


# --------------------------------------------------------------------------- audioset/dataset.py


def test_plain_constructors(mini_audioset):
    m = mini_audioset
    train = audioset_dataset.build_training_set(
        [m["balanced_train_hdf5"], m["unbalanced_train_hdf5"]], clip_length=2, roll=True, wavmix=True
    )
    assert len(train) == 32
    wave, name, target = train[20]
    assert wave.shape == (1, 64000) and target.shape == (527,)
    test = audioset_dataset.build_test_set(m["eval_hdf5"], clip_length=1.5)
    assert len(test) == 8 and test[0][0].shape == (1, 48000)
    sampler = audioset_dataset.build_weighted_sampler([m["balanced_train_hdf5"]], epoch_len=10, num_replicas=2, rank=1)
    assert len(sampler) == 5 and all(0 <= i < 16 for i in sampler)


def run_with_ingredient(config_updates, body, seed=None):
    """Run ``body()`` inside a sacred experiment that uses the basedataset ingredient."""
    from sacred import Experiment

    ex = Experiment("test_basedataset", ingredients=[audioset_dataset.dataset], save_git_info=False)
    out = {}

    @ex.main
    def main():
        out["value"] = body()

    updates = {"basedataset": config_updates, **({"seed": seed} if seed is not None else {})}
    ex.run(config_updates=updates, options={"--loglevel": "ERROR", "--capture": "no"})
    return out["value"]


def test_importance_sampler_follows_the_run_seed(mini_audioset):
    def draws(run_seed):
        sampler = audioset_dataset.get_ft_weighted_sampler(run_seed, epoch_len=20)
        sampler.set_epoch(0)
        return list(sampler)

    cfg = mini_audioset["basedataset_config"]
    a, again, other = (run_with_ingredient(cfg, lambda s=s: draws(s)) for s in (1, 1, 2))
    assert a == again and a != other
    fixed = {**cfg, "sampler_seed": 7}
    assert run_with_ingredient(fixed, lambda: draws(1)) == run_with_ingredient(fixed, lambda: draws(2))


def test_sacred_ingredient_defaults_follow_base_dir():
    shared, own = audioset_dataset.dataset.configurations  # the keys every dataset shares, AudioSet's own
    for base_dir in ("/data/as/", "/data/as"):
        cfg = own({"base_dir": base_dir})
        assert cfg["balanced_train_hdf5"] == "/data/as/mp3/balanced_train_segments_mp3.hdf"
        assert cfg["unbalanced_train_hdf5"] == "/data/as/mp3/unbalanced_train_segments_mp3.hdf"
        assert cfg["eval_hdf5"] == "/data/as/mp3/eval_segments_mp3.hdf"
    defaults = {**shared(), **own()}
    assert defaults["base_dir"] == "audioset_hdf5s/"
    # the original recipe (kkoutini/PaSST ex_audioset.py, audioset/dataset.py)
    assert (defaults["sample_rate"], defaults["clip_length"], defaults["gain_augment"]) == (32000, 10, 7)
    assert (defaults["roll"], defaults["roll_conf"]) == (True, {"axis": 1, "shift": None, "shift_range": 50})
    assert (defaults["wavmix"], defaults["wavmix_beta"], defaults["wavmix_rate"]) == (True, 2, 0.5)
    assert (defaults["sample_weight_offset"], defaults["sample_weight_sum"]) == (100, True)
    assert (defaults["epoch_len"], defaults["sampler_replace"]) == (100000, False)
    assert (defaults["n_classes"], defaults["strict_decoding"]) == (527, False)


def test_sacred_captured_functions(mini_audioset):
    def body():
        full = audioset_dataset.get_training_set()
        base = audioset_dataset.get_base_training_set()
        test = audioset_dataset.get_test_set()
        sampler = audioset_dataset.get_ft_weighted_sampler(0)
        big_sampler = audioset_dataset.get_ft_weighted_sampler(0, epoch_len=2000, sampler_replace=True)
        return len(full), len(base), len(test), test[0][0].shape, len(sampler), list(big_sampler)

    n_full, n_base, n_test, shape, n_sampler, drawn = run_with_ingredient(mini_audioset["basedataset_config"], body)
    assert (n_full, n_base, n_test, shape) == (32, 16, 8, (1, 64000))
    assert n_sampler == mini_audioset["basedataset_config"]["epoch_len"]
    # Draws cover both the balanced (0-15) and the unbalanced (16-31) part of the full set.
    assert len(drawn) == 2000 and min(drawn) < 16 <= max(drawn) < 32

    only_balanced = run_with_ingredient(
        {**mini_audioset["basedataset_config"], "use_full_set": False, "epoch_len": 16},
        lambda: (len(audioset_dataset.get_training_set()), max(audioset_dataset.get_ft_weighted_sampler(0))),
    )
    assert only_balanced[0] == 16 and only_balanced[1] < 16


def test_preload_reads_every_clip(mini_audioset):
    m = mini_audioset
    total = run_with_ingredient(m["basedataset_config"], lambda: preload_hdf5(audioset_dataset.hdf5_files()))
    expected = 0
    for key in ("balanced_train_hdf5", "unbalanced_train_hdf5", "eval_hdf5"):
        with open_read_only(m[key]) as hf:
            expected += sum(a.nbytes for a in hf["mp3"][()])
    assert total == expected > 0


def test_datasets_read_a_file_whose_lock_is_taken(mini_audioset, tmp_path):
    """HDF5 locks files it opens; on some Lustre/NFS mounts that fails or stalls: reading takes no lock."""
    import fcntl

    from experiment_cli import copy_hdf5

    path = copy_hdf5(mini_audioset["eval_hdf5"], tmp_path / "eval.hdf", rows=8)
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a writer, or a file system refusing locks
        with pytest.raises(OSError, match="unable to lock file"):
            h5py.File(path, "r")  # HDF5's default
        dataset = Hdf5AudioDataset(path, clip_length=32000, n_classes=527)
        assert len(dataset) == 8 and dataset[3][1]

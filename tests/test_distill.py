"""Knowledge distillation, piece by piece: recorded and replayed draws, the front end's explicit draws,
the teacher store, the losses, teacher targets under wavmix and mixup, the online teacher.

The end-to-end runs through the experiment commands are in ``test_distill_cli.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from helpers.data import draws
from helpers.data.augment import augment_training_set
from helpers.data.teacher_data import ReplayedDraws, TeacherTargets, clip_names, soft_targets
from helpers.data.teacher_store import StoreWork, TeacherStore, bytes_per_clip, encode_tape
from helpers.training.distill import Distillation, OnlineTeacher
from helpers.training.module import AudioModule
from helpers.training.tasks import MaskedMultiLabelTask, MultiClassTask, MultiLabelTask
from models.build import get_model
from models.preprocess import AugmentMelSTFT


class Clips(Dataset):
    """Item i: a noisy ramp scaled by (i + 1) plus an offset of i, 1000 samples; clip 5 is 1500 samples
    long (a random crop cuts it); target one-hot i."""

    n_classes = 6

    def __init__(self, crop: bool = False) -> None:
        self.crop = crop
        self.names = [f"clip{i}" for i in range(6)]

    def __len__(self):
        return 6

    def __getitem__(self, i):
        from helpers.data.audio_io import fit_length

        rng = np.random.default_rng(i)
        n = 1500 if i == 5 else 1000
        wave = (np.linspace(-0.5, 0.5, n) * (i + 1) + i + rng.normal(0, 0.1, n)).astype(np.float32)
        return fit_length(wave, 1000, self.crop)[None, :], f"clip{i}", np.eye(6, dtype=np.float32)[i]


def augmented(crop: bool = True):
    return augment_training_set(Clips(crop), gain_augment=7, roll=True, wavmix=True, wavmix_rate=0.7)


# ----------------------------------------------------------------------------------------- draws
def test_replayed_draws_give_the_recorded_item_and_neutral_the_clean_clip():
    ds = augmented()
    torch.manual_seed(0)
    recorded = []
    for i in [5, 5, 3, 1, 5, 0, 2, 4]:
        with draws.recording() as tape:
            item = ds[i]
        recorded.append((i, tape, item))
    names = {name for _, tape, _ in recorded for name in tape.values}
    assert {"crop", "gain_db", "roll", "wavmix", "partner", "lam"} <= names  # clip 5 is cropped, some are mixed
    for i, tape, (wave, name, target) in recorded:
        torch.manual_seed(123)  # another stream: replaying draws nothing
        with draws.replaying(tape.values):
            again = ds[i]
        assert np.array_equal(again[0], wave) and again[1] == name and np.array_equal(again[2], target)
    with draws.neutral():
        clean = ds[5]
    assert np.array_equal(clean[0], Clips(crop=False)[5][0])  # no gain, roll, mix; cut at the start
    # without a context the augmentations draw as they always did: the same stream as before
    torch.manual_seed(7)
    first = ds[2][0]
    torch.manual_seed(7)
    with draws.recording():
        assert np.array_equal(ds[2][0], first)


def test_a_replay_that_does_not_fit_the_recording_is_an_error():
    torch.manual_seed(1)
    with draws.recording() as tape:
        augmented()[3]
    no_gain = augment_training_set(Clips(), gain_augment=0, roll=True, wavmix=True, wavmix_rate=0.7)
    with pytest.raises(draws.ReplayMismatch, match="gain_db.*not used"), draws.replaying(tape.values):
        no_gain[3]
    with pytest.raises(draws.ReplayMismatch, match="does not hold"), draws.replaying({}):
        augmented()[3]


# --------------------------------------------------------------------------- front-end draws
def test_front_end_draws_are_per_example_and_the_same_bits_in_any_batch():
    mel = AugmentMelSTFT(n_mels=64, freqm=8, timem=20)
    x = torch.randn(5, 16000)
    augment = mel.draw_augment(5, 16000, torch.Generator().manual_seed(0))
    assert augment.shape == (5, 6) and augment[:, 0].max() < 10 and augment[:, 1].max() < 2000
    whole = mel(x, augment=augment)
    for size in (1, 2):
        parts = torch.cat([mel(x[i:i + size], augment=augment[i:i + size]) for i in range(0, 5, size)])
        assert torch.equal(parts, whole)
    assert torch.equal(mel.eval()(x, augment=augment), whole)  # explicit draws apply in either mode
    # an example's band is its own: one bank per example, equal to the shared bank of that band
    dtype = torch.float64
    fmin = mel.fmin + augment[:, 0].to(dtype)
    fmax = mel.fmax + mel.fmax_aug_range // 2 - augment[:, 1].to(dtype)
    assert torch.equal(mel.mel_basis_at(augment)[3], mel.random_mel_basis(fmin[3], fmax[3]))
    # the masks zero exactly the drawn bins and frames (before the final scaling)
    start, width = int(augment[2, 2]), int(augment[2, 3])
    zero = (0 + 4.5) / 5.0
    assert torch.all(whole[2, start:start + width] == zero)


# ------------------------------------------------------------------------------------- the store
def _logits(rows, draw, n_classes=10):
    return np.stack([np.sin(np.arange(n_classes) * (r + 1) + d) * 5 for r, d in zip(rows, draw, strict=True)])


def test_store_writes_chunks_as_they_finish_and_merges_them_in_row_order(tmp_path):
    path = tmp_path / "t.h5"
    work = StoreWork(path, n_rows=7, n_classes=10, draws=2, topk=3, settings={"seed": 1}, chunk_rows=3)
    work.begin()
    assert work.pending_chunks(0, 2) == [0, 2] and work.pending_chunks(1, 2) == [1]
    assert work.jobs([2]) == [12, 13]  # row 6, draws 0 and 1
    jobs = [(r, d) for r in range(7) for d in range(2)]
    rng = np.random.default_rng(0)
    written = []
    for batch in np.array_split(np.asarray(jobs)[rng.permutation(len(jobs))], 5):
        rows, draw = batch[:, 0], batch[:, 1]
        tape = {k: np.stack([v] * len(rows)) for k, v in encode_tape({"gain_db": 3, "roll": -2}).items()}
        mel = np.tile(np.arange(6), (len(rows), 1)) + rows[:, None]
        written += work.add(rows, draw, rows != 4, _logits(rows, draw), tape, mel)
    assert sorted(written) == [0, 1, 2] and work.missing_chunks() == []
    work.merge([f"clip{i}" for i in range(7)])
    assert not work.parts.exists()
    store = TeacherStore(path)
    assert store.names.tolist() == [f"clip{i}" for i in range(7)] and store.valid.tolist() == [True] * 4 + [False, True, True]
    full = _logits([6], [1])[0]
    got = store.logits(6, 1)
    top = np.argsort(-full)[:3]
    np.testing.assert_allclose(got[top], full[top], rtol=1e-3)  # float16
    rest = np.setdiff1d(np.arange(10), top)
    np.testing.assert_allclose(got[rest], full[rest].mean(), rtol=1e-3)
    tape, mel = store.draw(5, 1)
    assert tape == {"gain_db": 3, "roll": -2} and mel.tolist() == [5, 6, 7, 8, 9, 10]
    assert bytes_per_clip(527, 0, None) == 1055 and bytes_per_clip(527, 40, 20) < 40 * 200


def test_partial_work_of_other_settings_is_not_mixed_in(tmp_path):
    StoreWork(tmp_path / "t.h5", 4, 10, settings={"teacher": "a"}).begin()
    StoreWork(tmp_path / "t.h5", 4, 10, settings={"teacher": "a"}).begin()  # the same job: continues
    with pytest.raises(ValueError, match="other settings.*settings"):
        StoreWork(tmp_path / "t.h5", 4, 10, settings={"teacher": "b"}).begin()
    with pytest.raises(RuntimeError, match="not in .* yet"):
        StoreWork(tmp_path / "t.h5", 4, 10, settings={"teacher": "a"}).merge(["a", "b", "c", "d"])


# ------------------------------------------------------------------------------------ the losses
def test_distillation_loss_weights_label_and_teacher_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5), (torch.rand(4, 5) > 0.5).float()
    soft = torch.sigmoid(torch.randn(4, 5))
    teacher = torch.cat([soft, torch.tensor([[1.0], [1.0], [0.0], [1.0]])], dim=1)
    task = MultiLabelTask()
    loss, label, kd = Distillation(0.9, 2.0).loss(task, logits, labels, teacher)
    per_example = 4 * torch.nn.functional.binary_cross_entropy_with_logits(logits / 2, soft, reduction="none").mean(1)
    assert torch.allclose(kd, (per_example * teacher[:, -1]).mean())  # T**2-scaled; the third has no teacher
    assert torch.allclose(loss, 0.1 * label + 0.9 * kd)
    # label-free: the labels do not enter (even NaN placeholders)
    loss_free, _, _ = Distillation(1.0).loss(task, logits, torch.full_like(labels, float("nan")), teacher)
    assert torch.isfinite(loss_free)
    # one class per clip: KL divergence of the softmax, 0 when the student matches the teacher
    same = torch.softmax(logits, dim=-1)
    assert MultiClassTask().distillation_loss(logits, same, labels, 1.0).abs().max() < 1e-6
    assert (MultiClassTask().distillation_loss(logits, torch.softmax(-logits, -1), labels, 1.0) > 0.1).all()
    # OpenMIC: only the annotated labels count
    masks = torch.zeros(4, 5)
    masks[:, 0] = 1
    masked = MaskedMultiLabelTask().distillation_loss(logits, soft, torch.cat([labels, masks], 1), 1.0)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], soft[:, 0], reduction="none") / 5
    assert torch.allclose(masked, plain)
    with pytest.raises(ValueError, match="lambda"):
        Distillation(0.0)


def test_batch_mixup_mixes_teacher_targets_with_the_same_draw():
    soft = torch.rand(4, 3)
    teacher = torch.cat([soft, torch.tensor([[1.0], [0.0], [1.0], [1.0]])], 1)
    perm, lam = torch.tensor([1, 0, 3, 2]), torch.tensor([0.9, 0.6, 0.7, 0.5])
    mixed = Distillation(0.5).teacher_targets(MultiLabelTask(), (None, None, None, teacher), None, perm, lam)
    assert torch.allclose(mixed[:, :3], lam[:, None] * soft + (1 - lam[:, None]) * soft[perm])
    assert mixed[:, 3].tolist() == [0.0, 0.0, 1.0, 1.0]  # clip 1 has no teacher: neither has its mix


# --------------------------------------------------------------------------- teacher targets
def _store(tmp_path, names, draws_=0, dataset=None, n_classes=6, valid=None):
    """A store of per-clip logits ``(row + 1) * (class - 2)``; with draws, the draws recorded from ``dataset``."""
    work = StoreWork(tmp_path / f"t{draws_}.h5", len(names), n_classes, draws_, chunk_rows=4)
    work.begin()
    rows = np.arange(len(names))
    for d in range(max(draws_, 1)):
        tape, mel = {}, np.zeros((len(names), 6), np.int64)
        if draws_:
            tapes = []
            for r in rows:
                torch.manual_seed(int(r) * 10 + d)
                with draws.recording() as t:
                    dataset[int(r)]
                tapes.append(encode_tape(t.values))
            tape = {k: np.stack([t[k] for t in tapes]) for k in tapes[0]}
        logits = (rows[:, None] + 1 + d) * (np.arange(n_classes)[None, :] - 2.0)
        ok = np.ones(len(names), bool) if valid is None else valid
        work.add(rows, np.full(len(names), d), ok, logits, tape, mel)
    work.merge(names)
    return TeacherStore(work.path)


def test_offline_teacher_targets_follow_wavmix(tmp_path):
    ds = augmented(crop=False)
    store = _store(tmp_path, [f"clip{i}" for i in range(6)], valid=np.array([True] * 5 + [False]))
    targets = TeacherTargets(ds, store, "sigmoid", temperature=2.0)
    probs = {i: soft_targets(torch.from_numpy(store.logits(i)), "sigmoid", 2.0).numpy() for i in range(6)}
    seen_mixed = 0
    for seed in range(40):
        torch.manual_seed(seed)
        with draws.recording() as tape:
            ds[2]
        torch.manual_seed(seed)
        wave, name, target, teacher = targets[2]
        assert name == "clip2" and teacher.shape == (7,)
        if not tape.values["wavmix"]:
            np.testing.assert_allclose(teacher[:6], probs[2], rtol=1e-6)
            assert teacher[6] == 1
            continue
        partner, lam = tape.values["partner"], tape.values["lam"]
        np.testing.assert_allclose(target, lam * np.eye(6)[2] + (1 - lam) * np.eye(6)[partner], rtol=1e-6)
        if partner == 5:  # no teacher targets for clip 5
            assert teacher[6] == 0
        else:
            seen_mixed += 1
            np.testing.assert_allclose(teacher[:6], lam * probs[2] + (1 - lam) * probs[partner], rtol=1e-5)
            assert teacher[6] == 1
    assert seen_mixed > 5
    assert clip_names(targets) == [f"clip{i}" for i in range(6)]
    with pytest.raises(ValueError, match="kd.replay=True"):
        TeacherTargets(ds, _store(tmp_path, [f"clip{i}" for i in range(6)], 2, ds), "sigmoid")


def test_replayed_items_are_the_recorded_ones_with_their_draws_logits(tmp_path):
    ds = augmented()
    store = _store(tmp_path, [f"clip{i}" for i in range(6)], 3, ds)
    replay = ReplayedDraws(ds, store, "softmax", 1.0)
    for i in range(6):
        torch.manual_seed(i)
        draw = int(torch.randint(3, ()))
        torch.manual_seed(i)
        wave, name, target, teacher, mel = replay[i]
        torch.manual_seed(i * 10 + draw)
        with draws.recording():
            recorded = ds[i]
        assert np.array_equal(wave, recorded[0]) and np.array_equal(target, recorded[2])
        expected = soft_targets(torch.from_numpy(store.logits(i, draw)), "softmax").numpy()
        np.testing.assert_allclose(teacher[:6], expected, rtol=1e-6)
        assert teacher[6] == 1 and mel.dtype == np.int64 and mel.shape == (6,)
    (tmp_path / "other").mkdir()
    other = _store(tmp_path / "other", [f"other{i}" for i in range(6)], 1, ds)
    with pytest.raises(ValueError, match="another training set"):
        ReplayedDraws(ds, other, "softmax")


# ------------------------------------------------------------------------------ online teacher
@pytest.mark.filterwarnings("ignore:You are trying to")  # self.log outside a Trainer
def test_online_teacher_reads_the_students_input_in_eval_mode_without_gradients():
    torch.manual_seed(0)
    kw = dict(pretrained=False, depth=1, embed_dim=32, num_heads=2, input_fdim=64, input_tdim=200, n_classes=5)
    student, teacher_net = get_model(s_patchout_t=2, **kw), get_model(**kw)
    seen = {}
    student.register_forward_pre_hook(lambda m, args: seen.__setitem__("student", args[0].clone()))
    teacher_net.register_forward_pre_hook(lambda m, args: seen.__setitem__("teacher", (args[0].clone(), m.training,
                                                                                        torch.is_grad_enabled())))
    teacher = OnlineTeacher(teacher_net, precision="fp32")
    module = AudioModule(student, AugmentMelSTFT(n_mels=64, freqm=8, timem=20), MultiLabelTask(), mixup_alpha=0.3,
                         log_spectrograms=0, distill=Distillation(1.0, teacher=teacher))
    teacher.place(torch.device("cpu"))
    module.train()
    loss = module.training_step((torch.randn(4, 1, 16000), ["a", "b", "c", "d"], torch.zeros(4, 5)), 0)
    loss.backward()
    spec, training, grad = seen["teacher"]
    assert torch.equal(spec, seen["student"]) and not training and not grad  # mel, masks and mixup included
    assert all(p.grad is None for p in teacher_net.parameters())
    assert not any(k.startswith("teacher") or ".teacher" in k for k in module.state_dict())  # not in checkpoints
    assert any(p.grad is not None for p in student.parameters())

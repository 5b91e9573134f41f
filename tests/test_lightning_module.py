"""The shared Lightning module on a tiny PaSST: training step, optimiser groups, validation, SWA."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers.logger import Logger
from torch.utils.data import DataLoader, Dataset

from helpers.training.module import AudioModule, no_weight_decay_names
from helpers.training.swa import SWACallback
from helpers.training.tasks import MultiClassTask, MultiLabelTask
from models.build import get_model
from models.passt_weights import load_weights
from models.preprocess import AugmentMelSTFT

N_CLASSES = 5
SAMPLES = 32000  # 1 s -> 100 frames


def tiny_net():
    return get_model(pretrained=False, depth=1, embed_dim=32, num_heads=2, input_fdim=64, input_tdim=100,
                     n_classes=N_CLASSES, s_patchout_t=2, s_patchout_f=1)


def tiny_module(task=None, **kwargs):
    torch.manual_seed(0)
    return AudioModule(tiny_net(), AugmentMelSTFT(n_mels=64, freqm=4, timem=10), task or MultiLabelTask(),
                       lr_lambda=lambda epoch: 1.0, lr=1e-3, **kwargs)


class ToneSet(Dataset):
    """Clip ``i`` is a tone of class ``i % N_CLASSES`` (multi-hot target)."""

    def __init__(self, n=12):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        k = i % N_CLASSES
        t = torch.arange(SAMPLES) / 32000
        wave = (0.3 * torch.sin(2 * torch.pi * 300 * (k + 1) * t)).reshape(1, -1)
        return wave, f"clip{i}", torch.nn.functional.one_hot(torch.tensor(k), N_CLASSES).float()


def _batch(n=4):
    items = [ToneSet()[i] for i in range(n)]
    return torch.stack([i[0] for i in items]), [i[1] for i in items], torch.stack([i[2] for i in items])


def test_mel_front_end_runs_inside_the_module():
    module = tiny_module()
    spectrograms = module.mel_forward(_batch()[0])
    assert spectrograms.shape == (4, 1, 64, 100)
    logits, emb = module(_batch()[0])
    assert logits.shape == (4, N_CLASSES) and emb.shape == (4, 32)


# training_step outside a Trainer: self.log() only warns that there is no trainer
@pytest.mark.filterwarnings("ignore:You are trying to")
def test_training_step_with_mixup_gives_gradients():
    module = tiny_module(mixup_alpha=0.3)
    loss = module.training_step(_batch(), 0)
    assert torch.isfinite(loss) and loss.dim() == 0
    loss.backward()
    assert module.net.patch_embed.proj.weight.grad is not None


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_class_index_targets_are_mixed_as_one_hot():
    module = tiny_module(task=MultiClassTask(), mixup_alpha=0.3)
    wave, names, _ = _batch()
    loss = module.training_step((wave, names, torch.tensor([0, 1, 2, 3])), 0)
    assert torch.isfinite(loss)


def test_tokens_and_encodings_are_not_weight_decayed_unless_asked():
    module = tiny_module(weight_decay=1e-4)
    names = no_weight_decay_names(module.net)
    assert {"cls_token", "time_new_pos_embed", "freq_new_pos_embed"} <= names
    decay, no_decay = module.parameter_groups()
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    by_id = {id(p): n for n, p in module.net.named_parameters()}
    assert {by_id[id(p)] for p in no_decay["params"]} == names & set(by_id.values())
    trainable = [p for p in module.net.parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable)
    assert len(tiny_module(weight_decay_all=True).parameter_groups()) == 1


def test_unused_distillation_head_is_frozen_and_optimizer_is_fused():
    module = tiny_module()
    assert not any(p.requires_grad for p in module.net.head_dist.parameters())
    assert all(p.requires_grad for p in module.net.head.parameters())
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]


def test_the_swa_copy_is_not_optimised():
    module = tiny_module(swa=True)
    optimised = {id(p) for group in module.parameter_groups() for p in group["params"]}
    assert not optimised & {id(p) for p in module.net_swa.parameters()}
    assert all(not p.requires_grad for p in module.net_swa.parameters())


class MetricsLog(Logger):
    """Keeps every logged dict in memory."""

    def __init__(self):
        super().__init__()
        self.rows = []

    name, version = "memory", 0

    def log_metrics(self, metrics, step=None):
        self.rows.append(dict(metrics))

    def log_hyperparams(self, *args, **kwargs):
        pass


class EpochStartWeights(pl.Callback):
    """The live weights at the start of every epoch."""

    def __init__(self):
        self.weights = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.weights[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize(("swa_epoch_start", "swa_freq", "max_epochs", "averaged"), [
    (3, 2, 6, [2, 4]),  # like the AudioSet (50, 5): the weights after 49, 54, ..., 129 epochs
    (2, 1, 4, [1, 2, 3]),  # the downstream (2, 1): after 1, 2, ... epochs, never the final weights
])
def test_swa_averages_the_original_snapshots_and_validates_them_when_updated(
        tmp_path, swa_epoch_start, swa_freq, max_epochs, averaged):
    module = tiny_module(swa=True, mixup_alpha=0.3, log_spectrograms=0)
    recorder, log = EpochStartWeights(), MetricsLog()
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=log, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         log_every_n_steps=1, callbacks=[recorder, SWACallback(swa_epoch_start, swa_freq)])
    trainer.fit(module, train_dataloaders=DataLoader(ToneSet(8), batch_size=4),
                val_dataloaders=DataLoader(ToneSet(7), batch_size=3))
    assert int(module.swa_n_averaged) == len(averaged)
    expected = {k: torch.stack([recorder.weights[e][k] for e in averaged]).mean(0) for k in recorder.weights[0]}
    for key, value in module.net_swa.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)
    validated = sorted(int(row["epoch"]) for row in log.rows if "swa_val_loss" in row)
    assert validated == averaged  # the average is validated in the epochs that changed it, only
    assert sum("val_mAP" in row for row in log.rows) == max_epochs and module.last_val_examples == 7


@pytest.mark.slow
def test_checkpoints_hold_both_networks(tmp_path):
    module = tiny_module(swa=True, log_spectrograms=0)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         limit_val_batches=0, callbacks=[SWACallback(swa_epoch_start=2, swa_freq=1)])
    trainer.fit(module, train_dataloaders=DataLoader(ToneSet(8), batch_size=4))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert any(k.startswith("net.") for k in state) and any(k.startswith("net_swa.") for k in state)
    fresh = tiny_net().eval()
    load_weights(fresh, path, swa=True)
    x = torch.randn(2, 1, 64, 100)
    module.net_swa.eval()
    assert torch.allclose(fresh(x)[0], module.net_swa(x)[0], atol=1e-6)


def _config(**top):
    """The shared default config (as sacred builds it), with a tiny network."""
    from helpers.experiment.config import plain, shared_config

    cfg = plain(shared_config()())
    cfg["models"]["net"].update(pretrained=False, depth=1, embed_dim=32, num_heads=2, input_fdim=64,
                                input_tdim=100, n_classes=N_CLASSES)
    cfg["models"]["mel"].update(n_mels=64)
    cfg.update(top)
    return cfg


def _spec():
    from helpers.experiment.spec import ExperimentSpec

    return ExperimentSpec("test", MultiLabelTask(), train_set=lambda: None, test_set=lambda: None)


def test_build_module_follows_the_config():
    from helpers.experiment.commands import module_for as build_module

    module = build_module(_spec(), _config(swa=True, use_mixup=False))
    assert module.net_swa is not None and module.mixup_alpha is None
    assert all(k.startswith(("net.", "net_swa.", "swa_")) for k in module.state_dict())
    plain = build_module(_spec(), _config(swa=False), training=False)
    assert plain.net_swa is None and plain.lr_lambda is None and plain.mixup_alpha == 0.3


def test_compile_config_compiles_the_network_in_place(monkeypatch):
    """``compile=True`` compiles ``module.net`` itself: calls go through the compiled graph, the
    names (and checkpoint keys) stay ``net.*``. Dynamo captures the graph for real; the backend
    that gets it runs it as captured instead of inductor's code generation (minutes of C++
    compilation on a small CPU, tested nowhere else either)."""
    from functools import partial

    from helpers.experiment.commands import module_for as build_module

    graphs = []

    def run_captured(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend=run_captured))
    torch._dynamo.reset()
    module = build_module(_spec(), _config(compile=True, swa=True, use_mixup=False))
    plain = build_module(_spec(), _config(swa=True, use_mixup=False))
    plain.load_state_dict(module.state_dict())  # same keys: nothing renamed by the compilation
    spec = module.mel_forward(_batch()[0])
    with torch.no_grad():
        compiled_logits = module.net.eval()(spec)[0]
        assert len(graphs) == 1  # the call went through the compiled network
        torch.testing.assert_close(compiled_logits, plain.net.eval()(spec)[0], rtol=0, atol=0)
    assert len(graphs) == 1  # the uncompiled copy ran eagerly
    assert type(module.net) is type(plain.net)  # the network itself, not a wrapper around it
    torch._dynamo.reset()


@pytest.mark.slow
def test_several_evaluation_sets_are_validated_and_named_each(tmp_path):
    module = tiny_module(log_spectrograms=0, eval_sets=("valid", "eval"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader(ToneSet(8), batch_size=4),
                val_dataloaders=[DataLoader(ToneSet(7), batch_size=3), DataLoader(ToneSet(10), batch_size=4)])
    metrics = trainer.callback_metrics
    assert {"valid_mAP", "valid_loss", "eval_mAP", "eval_loss"} <= set(metrics)
    assert not any(k.startswith("val_") for k in metrics)
    assert module.last_eval_examples == {"valid": 7, "eval": 10} and module.last_val_examples == 7


def test_ddp_gathering_uses_each_sets_own_sampler():
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    module = tiny_module(eval_sets=("valid", "eval"))
    loaders = [DataLoader(list(range(n)), sampler=DistributedSampler(list(range(n)), num_replicas=2, rank=0,
                                                                    shuffle=False)) for n in (5, 8)]
    module._trainer = SimpleNamespace(world_size=2, val_dataloaders=loaders)  # what Lightning exposes
    for index, n in enumerate((5, 8)):
        shards = [list(DistributedSampler(list(range(n)), num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
        gathered = torch.tensor(shards, dtype=torch.float32)[..., None]  # [world, per rank, 1]
        module.all_gather = lambda t, g=gathered: g  # noqa: B023 - each set's own gathered tensor
        logits, targets = module._gather_eval_set(torch.zeros(1), torch.zeros(1), index)
        assert logits[:, 0].tolist() == list(range(n))  # every example once, padding removed


def test_the_bare_training_step_is_one_optimizer_step_on_the_task_loss():
    """helpers.training.speed.training_step (what model_speed_test and the benchmarks time) is a plain step."""
    from helpers.training.speed import training_step
    from helpers.training.tasks import MultiLabelTask

    torch.manual_seed(0)
    net = get_model(pretrained=False, n_classes=5, depth=1, embed_dim=32, num_heads=2, input_tdim=100)
    twin = get_model(pretrained=False, n_classes=5, depth=1, embed_dim=32, num_heads=2, input_tdim=100)
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()  # no random time-encoding offsets: both see the same function
    spectrograms, targets = torch.randn(2, 1, 128, 100), (torch.rand(2, 5) < 0.5).float()
    loss = training_step(net, spectrograms, targets, MultiLabelTask().loss, torch.optim.SGD(net.parameters(), lr=0.1))

    expected = MultiLabelTask().loss(twin(spectrograms)[0], targets)
    expected.backward()
    torch.optim.SGD(twin.parameters(), lr=0.1).step()
    torch.testing.assert_close(loss, expected.detach())
    for (name, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


class GradientNorms(pl.Callback):
    """The norm of all gradients the optimizer stepped with (they stay until the next step zeroes them)."""

    def __init__(self):
        self.norms = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        grads = [p.grad.float() for p in pl_module.net.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_gradient_clipping_with_the_fused_optimizer_unscales_then_clips(precision, tmp_path):
    """``trainer.gradient_clip_val`` under both mixed precisions (Lightning alone refuses: fused optimizer).

    On the CPU: ``bf16-mixed`` as it runs; ``16-mixed`` with fp16 autocast and a real loss scaler
    (``GradScaler("cpu")``, scale 2**12), the same Python path as on a GPU (unscale, clip, the
    scaler's step of the fused AdamW) with the CPU's kernels. The true gradients are clipped:
    clipping the scaled ones would leave a norm of clip / 4096, no clipping one far above.
    """
    from pytorch_lightning.plugins.precision import MixedPrecision

    clip = 1e-3  # far below the gradients' norm (~0.1-1 for the tiny model): every step is clipped
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))] \
        if precision == "16-mixed" else []
    module, norms = tiny_module(mixup_alpha=None, log_spectrograms=0), GradientNorms()
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         gradient_clip_val=clip, callbacks=[norms], plugins=plugins,
                         **({} if plugins else {"precision": precision}))
    trainer.fit(module, train_dataloaders=DataLoader(ToneSet(12), batch_size=4))
    assert str(trainer.precision) == precision and module.optimizers().optimizer.defaults["fused"]
    assert len(norms.norms) == 3 and all(n == pytest.approx(clip, rel=1e-2) for n in norms.norms), norms.norms
    assert any(not torch.equal(before[k], v) for k, v in module.net.state_dict().items())  # the steps were taken


class SavedEpochs(pl.Callback):
    """The epochs in which a checkpoint was written."""

    def __init__(self):
        self.epochs = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.epochs.append(trainer.current_epoch)


def test_validation_every_k_epochs_keeps_the_swa_epochs_and_the_last(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from helpers.training.swa import is_swa_epoch
    from helpers.training.validation_schedule import ValidationSchedule

    # k=3 over 5 epochs validates epoch 2; SWA (start 2, every 2) updates at the start of epochs 1 and 3; 4 is last
    schedule = ValidationSchedule(3, lambda epoch: is_swa_epoch(epoch, 2, 2))
    module, log, saved = tiny_module(swa=True, log_spectrograms=0), MetricsLog(), SavedEpochs()
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    best = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val_mAP", mode="max")
    trainer = pl.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=log, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, log_every_n_steps=1,
                         callbacks=[schedule, SWACallback(2, 2), last, best, saved])
    trainer.fit(module, train_dataloaders=DataLoader(ToneSet(4), batch_size=4),
                val_dataloaders=DataLoader(ToneSet(3), batch_size=3))
    assert sorted({int(row["epoch"]) for row in log.rows if "val_loss" in row}) == [1, 2, 3, 4]
    assert sorted({int(row["epoch"]) for row in log.rows if "swa_val_loss" in row}) == [1, 3]  # every SWA update
    assert sorted(set(saved.epochs)) == [1, 2, 3, 4]  # last.ckpt and the best one follow validation
    assert (tmp_path / "last.ckpt").is_file() and (tmp_path / "best.ckpt").is_file()

"""The training loop never waits for the accelerator, proven without one.

A GPU runs ahead of the host until the host needs something from it: a value (``.item()``,
``bool(t)``, ``.tolist()``, ``.cpu()``), an output whose shape depends on data (``nonzero``), or
a blocking copy from host memory (``torch.tensor(x, device=...)``, ``cpu_tensor.to(device)``).
Two checks cover the loop:

1. The module's own steps on fake CUDA tensors (``FakeTensorMode``: shapes and devices without
   data or a GPU). Reading a value or a data-dependent shape raises there, an op mixing a CPU
   tensor into CUDA ones fails its device check, and :class:`DeviceSyncs` fails on every copy
   between host and device. This covers the mel front end with its random bands and
   SpecAugment, mixup, patchout, the time-encoding offset, the loss and its logging, the fused
   optimizer step, the validation step and the metrics.
2. The real Lightning loop on the CPU (backward, optimizer, logging, progress bar): during the
   middle steps of training and validation no op reads a tensor value to the host. A module that
   puts a step value on the progress bar is caught by the same check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset

from helpers.data.resumable import ResumePoint
from helpers.training.metrics import average_precision_per_class, roc_auc_per_class
from helpers.training.module import AudioModule
from helpers.training.nonfinite import NonFiniteGuard
from helpers.training.optim import make_optimizer
from helpers.training.resume import StepSeeds, TrainingPosition
from helpers.training.tasks import MultiLabelTask
from models.build import get_model
from models.preprocess import AugmentMelSTFT

N_CLASSES = 5


def tiny_module(module_class=AudioModule) -> AudioModule:
    # 1 s clips give 100 frames, shorter than the 200 the time encodings cover: random offsets
    net = get_model(pretrained=False, depth=1, embed_dim=32, num_heads=2, input_fdim=64, input_tdim=200,
                    n_classes=N_CLASSES, s_patchout_t=2, s_patchout_f=1, u_patchout=3)
    return module_class(net, AugmentMelSTFT(n_mels=64, freqm=4, timem=10), MultiLabelTask(),
                        lr_lambda=lambda epoch: 1.0, lr=1e-3, mixup_alpha=0.3, log_spectrograms=0)


class DeviceSyncs(TorchDispatchMode):
    """Fails on every copy between host and device and on every value read from the device.

    Values of host tensors (a CPU-side draw that stays on the CPU costs no sync) read as 0: fake
    tensors carry no data, and the check is about the device, not about these values.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.copy_):
            devices = {t.device.type for t in tensors}
            if kwargs.get("device") is not None:
                devices.add(torch.device(kwargs["device"]).type)
            if len(devices) > 1:
                raise AssertionError(f"{func} copies between host and device")
        if func.overloadpacket is torch.ops.aten._local_scalar_dense:
            if tensors[0].device.type != "cpu":
                raise AssertionError(f"{func} reads a value from the device")
            dtype = tensors[0].dtype
            return False if dtype == torch.bool else 0.0 if dtype.is_floating_point else 0
        return func(*args, **kwargs)


@pytest.fixture
def fake_cuda():
    """Runs under FakeTensorMode (no GPU needed); build on the device ``with torch.device("cuda")``.

    The steps then run without that default device: a tensor made without ``device=`` lands on
    the CPU, as it would in a real run.
    """
    # the meta kernel PyTorch lacks for the Beta draw of mixup: same shape as its input
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("_sample_dirichlet", lambda concentration, generator=None: torch.empty_like(concentration), "Meta")
    with FakeTensorMode():
        yield
    lib._destroy()


@pytest.mark.filterwarnings("ignore:You are trying to")  # self.log outside a Trainer (part 2 has one)
def test_module_steps_read_nothing_back_from_a_cuda_device(fake_cuda):
    with torch.device("cuda"):
        module = tiny_module()
        optimizer = make_optimizer(module.parameter_groups(), lr=1e-3)
        wave, targets = torch.randn(4, 1, 32000), torch.rand(4, N_CLASSES)
        scores, labels, mask = torch.rand(50, N_CLASSES), torch.rand(50, N_CLASSES), torch.rand(50, N_CLASSES) > 0.3
    assert optimizer.defaults["fused"] and wave.device.type == "cuda"
    with DeviceSyncs():
        loss = module.training_step((wave, [f"clip{i}" for i in range(4)], targets), 0)
        assert loss.device.type == "cuda"
        # backward needs a real CUDA context; part 2 runs it for real. The fused optimizer step:
        for p in module.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p)
        optimizer.step()
        optimizer.zero_grad()

        module.eval()
        module.on_validation_epoch_start()
        with torch.no_grad():
            module.validation_step((wave, [f"clip{i}" for i in range(4)], targets), 0)
        assert average_precision_per_class(scores, labels, mask).device.type == "cuda"
        assert roc_auc_per_class(scores, labels).device.type == "cuda"


def test_the_fake_device_catches_device_reads_and_host_draws(fake_cuda):
    # the check can fail: what the loop used to do is caught
    x = torch.randn(4, device="cuda")
    with pytest.raises(DataDependentOutputException):
        int(x.sum())
    with DeviceSyncs():
        for read in (lambda: int(x.sum()), lambda: bool(x[0] > 0), lambda: x.tolist()):
            with pytest.raises(AssertionError, match="reads a value from the device"):
                read()
        with pytest.raises(AssertionError, match="host and device"):
            torch.randperm(4, device="cpu").to(x.device)  # a CPU draw moved to the device
        with pytest.raises(AssertionError, match="host and device"):
            torch.tensor(0.3, device=x.device)  # a Python number copied to the device
        with pytest.raises(AssertionError, match="host and device"):
            x.cpu()
        assert int(torch.randint(10, ())) == 0  # host values cost no sync (and read as 0 here)


# ------------------------------------------------------------------------- the Lightning loop
HOST_READS = {torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero, torch.ops.aten.masked_select,
              torch.ops.aten.is_nonzero, torch.ops.aten.equal}


class HostReads(TorchDispatchMode):
    """Records ops that hand a tensor's value (or a shape that depends on it) to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in HOST_READS:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


class WatchMiddleSteps(pl.Callback):
    """Watches whole steps 1 .. n-2 of training and validation, with the hooks that follow each."""

    def __init__(self) -> None:
        self.mode = HostReads()
        self.watched = 0

    def _step_starts(self, batch_idx: int, total: int) -> None:
        if batch_idx == 1:
            self.mode.__enter__()
        elif batch_idx == total - 1:
            self.mode.__exit__(None, None, None)
        if 1 <= batch_idx < total - 1:
            self.watched += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_starts(batch_idx, trainer.num_training_batches)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._step_starts(batch_idx, trainer.num_val_batches[0])


class Clips(Dataset):
    """Tones, made up front: loading runs in the watched process (no workers) and must run no ops."""

    def __init__(self) -> None:
        self.items = [(torch.sin(torch.arange(32000) * 0.01 * (i % N_CLASSES + 1)).reshape(1, -1), f"clip{i}",
                       torch.nn.functional.one_hot(torch.tensor(i % N_CLASSES), N_CLASSES).float()) for i in range(24)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def fit_watched(module: AudioModule, tmp_path, callbacks: tuple[pl.Callback, ...] = ()) -> WatchMiddleSteps:
    watch = WatchMiddleSteps()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=4, accelerator="cpu",
                         enable_progress_bar=True, enable_checkpointing=False, log_every_n_steps=50,
                         num_sanity_val_steps=0, callbacks=[*callbacks, watch], default_root_dir=tmp_path,
                         logger=pl.loggers.CSVLogger(tmp_path), enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few workers, few steps
        trainer.fit(module, DataLoader(Clips(), batch_size=4), DataLoader(Clips(), batch_size=4))
    assert watch.watched == 3 + 2
    return watch


@pytest.mark.slow
def test_lightning_training_and_validation_steps_read_nothing_back(tmp_path):
    torch.manual_seed(0)
    watch = fit_watched(tiny_module(), tmp_path)
    assert watch.mode.reads == []


@pytest.mark.slow
def test_the_fault_tolerance_callbacks_read_nothing_back_between_their_checks(tmp_path):
    # what every training run adds (helpers.experiment.commands.fault_tolerance_callbacks): the position
    # in the epoch, per-step seeds, and the NaN/inf guard, which reads its flag every 50 steps here
    torch.manual_seed(0)
    callbacks = (TrainingPosition(ResumePoint()), StepSeeds(0), NonFiniteGuard(None, check_every=50))
    watch = fit_watched(tiny_module(), tmp_path, callbacks)
    assert watch.mode.reads == []


class StepLossOnTheBar(AudioModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("bar_loss", loss, on_step=True, prog_bar=True)  # what the module used to do
        return loss


@pytest.mark.slow
def test_a_step_value_on_the_progress_bar_is_caught(tmp_path):
    torch.manual_seed(0)
    watch = fit_watched(tiny_module(StepLossOnTheBar), tmp_path)
    assert "aten._local_scalar_dense.default" in watch.mode.reads


# --------------------------------------------------------------------------------- under DDP
@pytest.mark.slow
def test_two_ddp_processes_run_no_collective_and_read_nothing_back_between_checks(tmp_path):
    """A real 2-process run (gloo): per step, DDP's gradient all-reduce and nothing else.

    Lightning 2.6.6 adds a broadcast and a host read of its SIGTERM flag to every step under
    DDP; ``helpers.training.sigterm`` agrees on SIGTERM about once a second instead (never in the
    watched steps here). Clipping (with the fused optimizer) and the fault-tolerance callbacks
    run in the loop.
    """
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "ddp_sync_run.py"), str(tmp_path)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k not in ("DDP", "RANK", "LOCAL_RANK",
                                                                                  "WORLD_SIZE")},
                               "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-5000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["world_size"] == 2 and len(result["steps"]) == 6
        for step in result["steps"]:
            assert step["reads"] == []
            assert step["collectives"] and set(step["collectives"]) == {"c10d.allreduce_.default"}, step
        assert len({len(step["collectives"]) for step in result["steps"]}) == 1  # the gradient buckets, every step
        # the counters see what Lightning's own per-step check costs
        assert "c10d.broadcast_.default" in result["lightning_check"]
        assert "aten._local_scalar_dense.default" in result["lightning_check"]

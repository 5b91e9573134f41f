"""AudioSet tagging with PaSST: what is specific to AudioSet; everything else is in helpers/.

Examples::

    python ex_audioset.py print_config
    python ex_audioset.py with basedataset.base_dir=/data/audioset_hdf5s/ trainer.precision=16
    DDP=2 python ex_audioset.py with basedataset.base_dir=/data/audioset_hdf5s/ -F runs/
    python ex_audioset.py evaluate_only with passt_s_ap476
    python ex_audioset.py evaluate_only with ensemble_s10
    python ex_audioset.py with ckpt_path=outputs/audioset/<run>/checkpoints/last.ckpt   # resume

See README.md ("Training on AudioSet") for the config tree, DDP/SLURM and resuming.
"""

# Sacred config scopes are functions whose local variables are the config.
# ruff: noqa: F841
from __future__ import annotations

# before the dataset, which imports sacred: config_updates imports it with its pkg_resources warning silenced
from config_updates import add_configs  # isort: skip
from audioset.dataset import dataset as basedataset
from audioset.dataset import get_ft_weighted_sampler, get_test_set, get_training_set, hdf5_files
from helpers.data.hdf5_dataset import preload_hdf5
from helpers.experiment.cli import build_experiment, run_cli
from helpers.experiment.spec import ExperimentSpec
from helpers.training.tasks import MultiLabelTask

spec = ExperimentSpec(
    name="audioset",
    task=MultiLabelTask(),  # 527 labels per clip: BCE, mAP
    train_set=get_training_set,
    test_set=get_test_set,
    train_sampler=get_ft_weighted_sampler,  # class-balanced importance sampling
)
ex = build_experiment(spec, ingredients=[basedataset])
add_configs(ex)


@ex.config
def audioset_config():
    """AudioSet trains from the ImageNet DeiT weights, with the importance sampler."""
    models = {"net": {"arch": "passt_deit_bd_p16_384", "n_classes": 527}}
    datasets = {"training": {"weighted_sampler": True}}


@ex.command
def preload_mp3():
    """Read the AudioSet HDF5 files once, sequentially (warms a network file system's cache)."""
    total = preload_hdf5(hdf5_files())
    print(f"read {total / 2**30:.2f} GiB")
    return total


if __name__ == "__main__":
    run_cli(ex)

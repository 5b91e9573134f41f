"""OpenMIC-2018 with PaSST: fine-tune the AudioSet PaSST-S to recognise 20 instruments.

Examples::

    python ex_openmic.py print_config
    python ex_openmic.py with trainer.precision=16 -p
    DDP=2 python ex_openmic.py with trainer.precision=16 -p
    python ex_openmic.py evaluate_only with openmic_passt_s_f128_10sec_p16_s10_ap85   # the released model

See openmic/README.md for the data, the commands and the paper's results.
"""

# Sacred config scopes are functions whose local variables are the config.
# ruff: noqa: F841
from __future__ import annotations

from config_updates import add_configs, finetune_config
from helpers.experiment.cli import build_experiment, run_cli
from helpers.experiment.spec import ExperimentSpec
from helpers.training.tasks import MaskedMultiLabelTask
from openmic.dataset import class_names, get_test_set, get_training_set
from openmic.dataset import dataset as basedataset

spec = ExperimentSpec(
    name="openmic",
    task=MaskedMultiLabelTask(),  # 20 labels + 20 masks per clip: masked BCE, masked mAP
    train_set=get_training_set,
    test_set=get_test_set,
    class_names=class_names,
)
ex = build_experiment(spec, ingredients=[basedataset])
add_configs(ex)
ex.add_config(finetune_config(
    n_classes=20, s_patchout_t=40, s_patchout_f=4, timem=192, datasets={"training": {"batch_size": 6}},
    doc="The original's ex_openmic.py: 10 epochs at lr 1e-5 from the AudioSet PaSST-S, batches of 6, SWA from epoch 2."))


if __name__ == "__main__":
    run_cli(ex)

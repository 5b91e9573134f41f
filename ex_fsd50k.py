"""FSD50K with PaSST: fine-tune the AudioSet PaSST-S on 200 classes; validate and evaluate every epoch.

Examples::

    python ex_fsd50k.py print_config
    python ex_fsd50k.py with trainer.precision=16 -p
    python ex_fsd50k.py with passt_s_swa_p16_s16_128_ap473 models.net.s_patchout_t=10 models.net.s_patchout_f=1 trainer.precision=16 -p
    python ex_fsd50k.py evaluate_only with fsd50k_passt_s_f128_p16_s10_ap655 variable_eval   # the released model

See fsd50k/README.md for the data, the commands and the paper's results.
"""

# Sacred config scopes are functions whose local variables are the config.
# ruff: noqa: F841
from __future__ import annotations

from config_updates import add_configs, finetune_config
from fsd50k.dataset import class_names, get_eval_set, get_training_set, get_valid_set
from fsd50k.dataset import dataset as basedataset
from helpers.experiment.cli import build_experiment, run_cli
from helpers.experiment.spec import EvalSet, ExperimentSpec
from helpers.training.tasks import MultiLabelTask

spec = ExperimentSpec(
    name="fsd50k",
    task=MultiLabelTask(),  # 200 labels per clip: BCE, mAP
    train_set=get_training_set,
    # both every epoch; the first (valid_mAP) picks the best checkpoint
    eval_sets=(EvalSet("valid", get_valid_set, loader="valid"), EvalSet("eval", get_eval_set, loader="eval")),
    class_names=class_names,
)
ex = build_experiment(spec, ingredients=[basedataset])
add_configs(ex)
ex.add_config(finetune_config(
    n_classes=200, s_patchout_t=10, s_patchout_f=4, freqm=0, timem=0, trainer={"max_epochs": 50},
    ramp_down_start=10, ramp_down_len=10, swa_epoch_start=10, swa_freq=3,
    datasets={"valid": {"batch_size": 10}, "eval": {"batch_size": 10}},  # other keys: from datasets.test
    doc="The original's ex_fsd50k.py: 50 epochs at lr 1e-5, ramp-down from epoch 10 over 10, SWA from epoch 10\n"
        "every 3, no SpecAugment."))


@ex.named_config
def variable_eval():
    """Validate and evaluate on whole clips (any length, one clip per batch) instead of 10 s crops."""
    basedataset = dict(variable_eval=True)
    datasets = dict(valid=dict(batch_size=1), eval=dict(batch_size=1))


if __name__ == "__main__":
    run_cli(ex)

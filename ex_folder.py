"""Your own data with PaSST: fine-tune the AudioSet PaSST-S on a folder of audio files and their labels.

Examples::

    python ex_folder.py with basedataset.audio_dir=genres/                     # one folder per class (GTZAN)
    python ex_folder.py with basedataset.audio_dir=clips/                      # Hugging Face audiofolder (metadata.csv)
    python ex_folder.py with basedataset.audio_dir=clips/ basedataset.csv=labels.csv basedataset.skip_bad_files=True
    python ex_folder.py evaluate_only with basedataset.audio_dir=genres/ \
        models.checkpoint=outputs/folder/<run>/checkpoints/last.ckpt

The number of classes (``models.net.n_classes``) comes from the labels; so do the task (one label
per clip: cross-entropy and accuracy; several: BCE and mAP) and the class names stored in every
checkpoint. See folder/dataset.py for the layouts and README.md ("Your own data").
"""

# Sacred config scopes are functions whose local variables are the config.
# ruff: noqa: F841
from __future__ import annotations

from config_updates import add_configs, finetune_config
from folder.dataset import class_names, get_task, get_test_set, get_training_set, read_table
from folder.dataset import dataset as basedataset
from helpers.experiment.cli import build_experiment, run_cli
from helpers.experiment.spec import ExperimentSpec

spec = ExperimentSpec(
    name="folder",
    task=get_task,  # decided by the labels: multi-class or multi-label
    train_set=get_training_set,
    test_set=get_test_set,
    class_names=class_names,
)
ex = build_experiment(spec, ingredients=[basedataset])
add_configs(ex)
ex.add_config(finetune_config(  # n_classes=None: the number of classes of the labels (classes_from_csv)
    n_classes=None, doc="The ESC-50 recipe: 10 epochs at lr 1e-5 from the AudioSet PaSST-S, SWA from epoch 2."))


@ex.config_hook
def classes_from_csv(config, command_name, logger):
    """``models.net.n_classes=None`` (the default) becomes the number of classes of the labels."""
    if config["models"]["net"]["n_classes"] is not None:
        return {}
    try:
        n_classes = len(read_table(config["basedataset"]).classes)
    except (OSError, ValueError):
        return {}  # the same error comes again, with the file named, when the data is read
    return {"models": {"net": {"n_classes": n_classes}}}


if __name__ == "__main__":
    run_cli(ex)

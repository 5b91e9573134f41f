"""ESC-50 with PaSST: fine-tune the AudioSet PaSST-S on four folds, test on the fifth.

Examples::

    python ex_esc50.py print_config
    python ex_esc50.py with models.net.s_patchout_t=10 models.net.s_patchout_f=5 basedataset.fold=1 -p
    python ex_esc50.py cross_validate -F runs/          # the five folds in turn, then each fold and the mean
    python ex_esc50.py evaluate_only with basedataset.fold=1 models.checkpoint=esc50-passt-s-n-f128-p16-s10-fold1-acc.967.pt

See esc50/README.md for the data, the commands and the paper's results.
"""

# Sacred config scopes are functions whose local variables are the config.
# ruff: noqa: F841
from __future__ import annotations

import copy
import os
import time

from config_updates import add_configs, finetune_config
from esc50.dataset import class_names, get_test_set, get_training_set
from esc50.dataset import dataset as basedataset
from helpers.experiment.cli import build_experiment, run_cli
from helpers.experiment.ddp import ddp_processes_from_env
from helpers.experiment.spec import ExperimentSpec
from helpers.training.tasks import MultiClassTask

spec = ExperimentSpec(
    name="esc50",
    task=MultiClassTask(),  # one class per clip: cross-entropy, accuracy
    train_set=get_training_set,
    test_set=get_test_set,
    class_names=class_names,
)
ex = build_experiment(spec, ingredients=[basedataset])
add_configs(ex)
ex.add_config(finetune_config(
    n_classes=50, doc="The original's ex_esc50.py: 10 epochs at lr 1e-5 from the AudioSet PaSST-S, SWA from epoch 2."))

#: ESC-50's folds
FOLDS = (1, 2, 3, 4, 5)


@ex.command
def cross_validate(_run, _config):
    """Train once per fold (1-5), each a sacred run of its own, observed like this one, then print and
    return every fold's accuracy and the mean. The folds run one after the other in this process
    (for DDP, run ``DDP=N python ex_esc50.py with basedataset.fold=K`` per fold)."""
    cfg = dict(_config)
    if ddp_processes_from_env() > 1 or cfg["trainer"].get("devices", 1) not in (1, "1") or cfg.get("ckpt_path"):
        raise ValueError("cross_validate trains the five folds in one process: without DDP and without ckpt_path. "
                         "Run one fold per command instead: python ex_esc50.py with basedataset.fold=K")
    folder = os.path.join(cfg["output_dir"], f"esc50-folds-{time.strftime('%Y%m%d-%H%M%S')}")
    results, runs = {}, {}
    experiment_observers = ex.observers
    try:
        for fold in FOLDS:
            print(f"\n===== ESC-50 fold {fold} of {len(FOLDS)} =====", flush=True)
            # fresh copies: an observer keeps the state of the run it observes
            ex.observers = [copy.copy(observer) for observer in _run.observers]
            updates = {**cfg, "basedataset": {**cfg["basedataset"], "fold": fold},
                       "output_dir": os.path.join(folder, f"fold{fold}")}
            fold_run = ex.run("main", config_updates=updates)
            results[fold], runs[fold] = fold_run.result, fold_run._id
    finally:
        ex.observers = experiment_observers
    _run.info.update(fold_runs=runs, output_dir=folder)
    return summarize_folds(results)


def summarize_folds(results: dict[int, dict[str, float]]) -> dict:
    """Every fold's accuracy (live and SWA network, last epoch) and their means, printed as a table."""
    keys = [k for k in ("val_acc", "swa_val_acc") if all(k in r for r in results.values())]
    mean = {k: sum(r[k] for r in results.values()) / len(results) for k in keys}
    print("\nESC-50 cross-validation (accuracy on each test fold, last epoch):")
    print("  fold " + "".join(f"{k:>14s}" for k in keys))
    for fold, result in results.items():
        print(f"  {fold:>4d} " + "".join(f"{result[k]:14.4f}" for k in keys))
    print("  mean " + "".join(f"{mean[k]:14.4f}" for k in keys))
    return {"folds": {str(f): {k: r[k] for k in keys} for f, r in results.items()}, "mean": mean}


if __name__ == "__main__":
    run_cli(ex)

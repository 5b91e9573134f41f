"""Named configs shared by every experiment (``python ex_audioset.py print_named_configs`` lists them).

Use them after ``with``: ``python ex_audioset.py evaluate_only with passt_s_ap476``. Each changes
a few keys of the config tree (described by ``print_config``).

* one per released architecture, named after it (``passt_s_swa_p16_s16_128_ap473``, ...) and
  made from the registry :data:`models.registry.ARCHS` (strides, clip length, STFT hop), plus the
  original framework's short names for some of them (:data:`models.registry.SHORT_NAMES`; those
  of the 20 s and 30 s models also set the clip length);
* the original's ensembles (:data:`models.registry.ENSEMBLES`), whose members' strides come from
  the registry;
* training switches (``nomixup``, ``mini_train``, ``tiny_model``, ``dynamic_roll``, ...);
* knowledge distillation recipes (``kd``, ``kd_ap486_recipe``, ``kd_consistent``, ``kd_online``;
  README "Knowledge distillation" has their sources and costs).

Nothing here is a fact of its own: every model name and setting comes from :mod:`models.registry`.
:func:`finetune_config` is the fine-tuning recipe the downstream experiments share.
"""

# Sacred named configs are functions whose local variables are the config updates.
# ruff: noqa: F841
from __future__ import annotations

import warnings

# every experiment script imports this module first: sacred 0.8.7 imports
# pkg_resources, which the setuptools it needs (<82) declares deprecated at every start
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from sacred import Experiment
    from sacred.config.config_dict import ConfigDict

from models.registry import ARCHS, ENSEMBLES, SHORT_NAMES, ArchConfig

#: the AudioSet-trained PaSST-S that ESC-50, OpenMIC, FSD50K and your own data are fine-tuned from
#: (the original's get_model default; its paper results started from passt_s_swa_p16_128_ap476)
FINETUNE_FROM = "passt_s_kd_p16_128_ap486"

#: what a short name (:data:`models.registry.SHORT_NAMES`) sets beyond its architecture's released config
SHORT_NAME_UPDATES: dict[str, dict] = {
    "passt_s_20sec": {"basedataset": {"clip_length": 20}},
    "passt_s_30sec": {"basedataset": {"clip_length": 30}},
}


def released_model_config(arch: ArchConfig) -> dict:
    """Config updates that load ``arch``'s released weights with the settings it was trained with."""
    updates: dict = {"models": {"net": {"arch": arch.name, "fstride": arch.fstride, "tstride": arch.tstride,
                                        "input_tdim": arch.input_tdim, "pretrained": True}}}
    if arch.hopsize != 320:
        updates["models"]["mel"] = {"hopsize": arch.hopsize}
    return updates


def _add(ex: Experiment, name: str, updates: dict, doc: str) -> None:
    """Register a named config built from data, with ``doc`` shown by ``print_named_configs``."""
    config = ConfigDict(updates)
    config.__doc__ = doc
    ex.named_configs[name] = config


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def finetune_config(n_classes: int | None, s_patchout_t: int = 10, s_patchout_f: int = 3, freqm: int = 48,
                    timem: int = 80, doc: str = "", **updates) -> dict:
    """The original's fine-tuning recipe (its ESC-50 and OpenMIC experiments) as config updates.

    10 epochs at lr 1e-5 from :data:`models.registry.FINETUNE_FROM`, SWA from epoch 2 every
    epoch, structured patchout and SpecAugment as given; ``updates`` (nested dicts merged) change
    the rest, e.g. ``trainer={"max_epochs": 50}``; ``doc`` heads ``print_config``.
    ``ex.add_config(finetune_config(50, doc="..."))``.
    """
    recipe = {"models": {"net": {"arch": FINETUNE_FROM, "n_classes": n_classes, "s_patchout_t": s_patchout_t,
                                 "s_patchout_f": s_patchout_f},
                         "mel": {"freqm": freqm, "timem": timem}},
              "trainer": {"max_epochs": 10}, "lr": 0.00001, "swa_epoch_start": 2, "swa_freq": 1}
    return _merged({**recipe, "__doc__": doc} if doc else recipe, updates)


def _dataset_defaults(ex: Experiment) -> dict:
    """The default config of the experiment's ``basedataset`` ingredient (empty without one)."""
    cfg: dict = {}
    for ingredient in ex.ingredients:
        if ingredient.path == "basedataset":
            for config in ingredient.configurations:
                cfg = dict(config(preset=cfg))
    return cfg


def add_configs(ex: Experiment) -> None:
    """Register every named config on ``ex``."""
    for arch in ARCHS.values():
        if not arch.imagenet:
            _add(ex, arch.name, released_model_config(arch), f"Released weights: {arch.description}.")
    for name, arch_name in SHORT_NAMES.items():
        arch = ARCHS[arch_name]
        updates = released_model_config(arch)
        if arch.clip_seconds != 10:  # the original's short names of the long models train on their clip length
            updates["basedataset"] = {"clip_length": int(arch.clip_seconds)}
        _add(ex, name, updates, f"= {arch_name}: {arch.description}.")
    for name, (map_, members) in ENSEMBLES.items():
        entries = [[m, ARCHS[m].fstride, ARCHS[m].tstride] for m in members]
        _add(ex, name, {"models": {"ensemble": entries}},
             f"Ensemble of {len(members)} released AudioSet models (mAP {map_}): {', '.join(members)}.")

    @ex.named_config
    def nomixup():
        """Don't apply mixup (spectrogram level)."""
        use_mixup = False
        mixup_alpha = 0.3

    @ex.named_config
    def mixup():
        """Apply mixup (spectrogram level) with alpha 0.3."""
        use_mixup = True
        mixup_alpha = 0.3

    mini_train = {"trainer": dict(max_epochs=2, limit_train_batches=5, limit_val_batches=5, log_every_n_steps=1,
                                  num_sanity_val_steps=0),
                  "warm_up_len": 1, "ramp_down_start": 1, "ramp_down_len": 1, "swa_epoch_start": 0, "swa_freq": 1}
    if "sampler_replace" in _dataset_defaults(ex):
        # a debug run runs on a few clips too: the recipe's epoch (100k distinct clips) is drawn with replacement
        mini_train["basedataset"] = {"sampler_replace": True}
    _add(ex, "mini_train", mini_train, "Debug run: 2 epochs of 5 batches, SWA and the lr schedule squeezed into "
                                       "them; runs on any number of clips.")

    @ex.named_config
    def tiny_model():
        """A tiny PaSST from scratch (1 block, width 32, 64 mel bins, 2 s clips) for CPU smoke tests."""
        models = {
            "net": {"pretrained": False, "depth": 1, "embed_dim": 32, "num_heads": 2, "input_fdim": 64,
                    "input_tdim": 200, "s_patchout_t": 2, "s_patchout_f": 1},
            "mel": {"n_mels": 64, "freqm": 8, "timem": 20},
        }

    @ex.named_config
    def passt():
        """PaSST-S with get_model's default released weights (passt_s_kd_p16_128_ap486, stride 10)."""
        models = {"net": {"arch": "passt_s_kd_p16_128_ap486", "fstride": 10, "tstride": 10, "pretrained": True}}

    @ex.named_config
    def kd():
        """Offline distillation as EfficientAT: 0.1 label loss + 0.9 teacher loss, T = 1; set kd.teacher_logits."""
        kd = dict(weight=0.9, temperature=1.0)

    @ex.named_config
    def kd_ap486_recipe():
        """The published recipe of passt_s_kd_p16_128_ap486 (ex_audioset_kd.py): kd without wavmix; set kd.teacher_logits."""
        kd = dict(weight=0.9, temperature=1.0)
        basedataset = dict(wavmix=False)

    @ex.named_config
    def kd_consistent():
        """Consistent teaching as CED: 40 recorded draws per clip (top 20 logits), replayed, label-free, no batch mixup."""
        kd = dict(weight=1.0, temperature=1.0, replay=True, draws=40, topk=20)
        use_mixup = False

    @ex.named_config
    def kd_online():
        """Online distillation: the teacher (kd.teacher) runs on every batch as the student sees it; lambda 0.9, T = 1."""
        kd = dict(weight=0.9, temperature=1.0)

    @ex.named_config
    def dynamic_roll():
        """Randomly roll (circularly shift) the training waveforms by up to 10000 samples."""
        basedataset = dict(roll=True, roll_conf=dict(axis=1, shift_range=10000))

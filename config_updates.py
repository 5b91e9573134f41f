"""Named configs shared by every experiment (``python ex_audioset.py print_named_configs`` lists them).

Use them after ``with``: ``python ex_audioset.py evaluate_only with passt_s_ap476``. Each named
config only changes a few keys of the config tree of :mod:`helpers.experiment`; the first line of
its docstring is what ``print_named_configs`` shows.
"""

# Sacred named configs are functions whose local variables are the config updates.
# ruff: noqa: F841
from __future__ import annotations

from sacred import Experiment

#: (arch, fstride, tstride) of the released AudioSet models, by their named config
RELEASED = {
    "passt_s_ap476": ("passt_s_swa_p16_128_ap476", 10, 10),
    "passt_s_ap4763": ("passt_s_swa_p16_128_ap4761", 10, 10),
    "passt_s_ap472": ("passt_s_p16_128_ap472", 10, 10),
    "passt_s_p16_s16_128_ap468": ("passt_s_p16_s16_128_ap468", 16, 16),
    "passt_s_swa_p16_s16_128_ap473": ("passt_s_swa_p16_s16_128_ap473", 16, 16),
    "passt_s_swa_p16_s14_128_ap471": ("passt_s_swa_p16_s14_128_ap471", 14, 14),
    "passt_s_p16_s14_128_ap469": ("passt_s_p16_s14_128_ap469", 14, 14),
    "passt_s_swa_p16_s12_128_ap473": ("passt_s_swa_p16_s12_128_ap473", 12, 12),
    "passt_s_p16_s12_128_ap470": ("passt_s_p16_s12_128_ap470", 12, 12),
}


def _net(name: str) -> dict:
    arch, fstride, tstride = RELEASED[name]
    return {"arch": arch, "fstride": fstride, "tstride": tstride, "pretrained": True}


def _members(*names: str) -> list[list]:
    return [list(RELEASED[n]) for n in names]


def add_configs(ex: Experiment) -> None:
    """Register every named config on ``ex``."""

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

    @ex.named_config
    def mini_train():
        """Debug run: 2 epochs of 5 batches, SWA and the lr schedule squeezed into them."""
        trainer = dict(max_epochs=2, limit_train_batches=5, limit_val_batches=5, log_every_n_steps=1,
                       num_sanity_val_steps=0)
        warm_up_len = 1
        ramp_down_start = 1
        ramp_down_len = 1
        swa_epoch_start = 0
        swa_freq = 1

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
        """Use PaSST-S with the released AudioSet weights (get_model's defaults, stride 10)."""
        models = {"net": {"arch": "passt_s_swa_p16_128_ap476", "fstride": 10, "tstride": 10, "pretrained": True}}

    @ex.named_config
    def passt_s_20sec():
        """PaSST-S pretrained on AudioSet with time encodings for 20 s clips (ap=.474)."""
        models = {"net": {"arch": "passt_s_f128_20sec_p16_s10_ap474", "fstride": 10, "tstride": 10,
                          "input_tdim": 2000, "pretrained": True}}
        basedataset = dict(clip_length=20)

    @ex.named_config
    def passt_s_30sec():
        """PaSST-S pretrained on AudioSet with time encodings for 30 s clips (ap=.473)."""
        models = {"net": {"arch": "passt_s_f128_30sec_p16_s10_ap473", "fstride": 10, "tstride": 10,
                          "input_tdim": 3000, "pretrained": True}}
        basedataset = dict(clip_length=30)

    @ex.named_config
    def passt_s_ap476():
        """PaSST-S pretrained on AudioSet, SWA, stride 10 (mAP .476)."""
        models = {"net": _net("passt_s_ap476")}

    @ex.named_config
    def passt_s_ap4763():
        """PaSST-S pretrained on AudioSet, SWA, stride 10, second run (the released "ap.4761" weights)."""
        models = {"net": _net("passt_s_ap4763")}

    @ex.named_config
    def passt_s_ap472():
        """PaSST-S pretrained on AudioSet, no SWA, stride 10 (mAP .472)."""
        models = {"net": _net("passt_s_ap472")}

    @ex.named_config
    def passt_s_p16_s16_128_ap468():
        """PaSST-S pretrained on AudioSet, no SWA, stride 16 = no patch overlap (mAP .468)."""
        models = {"net": _net("passt_s_p16_s16_128_ap468")}

    @ex.named_config
    def passt_s_swa_p16_s16_128_ap473():
        """PaSST-S pretrained on AudioSet, SWA, stride 16 = no patch overlap (mAP .473)."""
        models = {"net": _net("passt_s_swa_p16_s16_128_ap473")}

    @ex.named_config
    def passt_s_swa_p16_s14_128_ap471():
        """PaSST-S pretrained on AudioSet, SWA, stride 14 (mAP .471)."""
        models = {"net": _net("passt_s_swa_p16_s14_128_ap471")}

    @ex.named_config
    def passt_s_p16_s14_128_ap469():
        """PaSST-S pretrained on AudioSet, no SWA, stride 14 (mAP .469)."""
        models = {"net": _net("passt_s_p16_s14_128_ap469")}

    @ex.named_config
    def passt_s_swa_p16_s12_128_ap473():
        """PaSST-S pretrained on AudioSet, SWA, stride 12 (mAP .473)."""
        models = {"net": _net("passt_s_swa_p16_s12_128_ap473")}

    @ex.named_config
    def passt_s_p16_s12_128_ap470():
        """PaSST-S pretrained on AudioSet, no SWA, stride 12 (mAP .470)."""
        models = {"net": _net("passt_s_p16_s12_128_ap470")}

    @ex.named_config
    def ensemble_s10():
        """Ensemble of the three stride-10 AudioSet models (mAP .4864)."""
        models = {"ensemble": _members("passt_s_ap476", "passt_s_ap4763", "passt_s_ap472")}

    @ex.named_config
    def ensemble_many():
        """Ensemble of all nine AudioSet models with strides 10, 12, 14 and 16 (mAP .4956)."""
        models = {"ensemble": _members(
            "passt_s_ap476", "passt_s_ap4763", "passt_s_ap472",
            "passt_s_p16_s12_128_ap470", "passt_s_swa_p16_s12_128_ap473",
            "passt_s_p16_s14_128_ap469", "passt_s_swa_p16_s14_128_ap471",
            "passt_s_swa_p16_s16_128_ap473", "passt_s_p16_s16_128_ap468")}

    @ex.named_config
    def ensemble_4():
        """Ensemble of four SWA AudioSet models with strides 10, 12, 14 and 16 (mAP .4926)."""
        models = {"ensemble": _members(
            "passt_s_ap476", "passt_s_swa_p16_s12_128_ap473", "passt_s_swa_p16_s14_128_ap471",
            "passt_s_swa_p16_s16_128_ap473")}

    @ex.named_config
    def ensemble_5():
        """Ensemble of five SWA AudioSet models: two of stride 10, one each of 12, 14, 16 (mAP .49459)."""
        models = {"ensemble": _members(
            "passt_s_ap476", "passt_s_ap4763", "passt_s_swa_p16_s12_128_ap473",
            "passt_s_swa_p16_s14_128_ap471", "passt_s_swa_p16_s16_128_ap473")}

    @ex.named_config
    def ensemble_s16_14():
        """Ensemble of the SWA AudioSet models with strides 14 and 16 (mAP .48579)."""
        models = {"ensemble": _members("passt_s_swa_p16_s14_128_ap471", "passt_s_swa_p16_s16_128_ap473")}

    @ex.named_config
    def dynamic_roll():
        """Randomly roll (circularly shift) the training waveforms by up to 10000 samples."""
        basedataset = dict(roll=True, roll_max_shift=10000)

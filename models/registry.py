"""Every model a user can name, and what each name resolves to: the one registry of released models.

* :data:`ARCHS` - every released architecture (:class:`ArchConfig`): its release URL, the settings
  it was trained with and the label set its outputs carry;
* :data:`ARCH_ALIASES` (the hear21passt package's names) and :data:`SHORT_NAMES` (the original
  framework's named configs) - other names of architectures;
* :data:`ENSEMBLES` - the original's ensembles of released AudioSet models;
* :data:`LABEL_SETS` - the class names of AudioSet (527), FSD50K (200) and OpenMIC-2018 (20):
  where they come from (:mod:`models.labels` reads and fetches them);
* :data:`DEFAULT_ARCH`, :data:`HEAR_DEFAULT_ARCH`, :data:`FINETUNE_FROM` - the models the
  commands start from;
* :func:`resolve_model` - the one resolver: any name above to what to build (:class:`ModelChoice`).

Data and lookups only (no torch): the network builder (:mod:`models.build`), the tagging, export and
web-demo commands, the HEAR API and the named configs of ``config_updates.py`` all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"
SAMPLE_RATE = 32000  # every released model's front end


@dataclass(frozen=True)
class ArchConfig:
    """One released architecture: how to build it and where its weights live.

    ``fstride``/``tstride``/``input_tdim``/``n_classes`` are the settings the checkpoint was
    trained with; :func:`models.build.get_model` warns (and adapts the encodings) when they are
    changed. ``hopsize`` is the STFT hop of the mel front end it was trained on
    (``AugmentMelSTFT``). ``labels`` names the :data:`LABEL_SETS` entry of its outputs (None:
    ImageNet's classes, not named here).
    """

    name: str
    url: str
    description: str
    fstride: int = 10
    tstride: int = 10
    input_fdim: int = 128
    input_tdim: int = 998
    n_classes: int = 527
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    hopsize: int = 320
    imagenet: bool = False  # weights come from an image model (pos_embed on a square grid)
    labels: str | None = "audioset"

    @property
    def file_name(self) -> str:
        """File name of the release, as stored in ``$TORCH_HOME/hub/checkpoints/``."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def clip_seconds(self) -> float:
        """The clip length its time encodings cover (10 s for most, 20 or 30 s for the long ones)."""
        return round(self.input_tdim * self.hopsize / SAMPLE_RATE, 1)


def _release(tag: str, file: str) -> str:
    return f"{_RELEASES}/{tag}/{file}"


_ARCH_LIST = [
    ArchConfig("passt_deit_bd_p16_384",
               "https://dl.fbaipublicfiles.com/deit/deit_base_distilled_patch16_384-d0272ac0.pth",
               "ImageNet DeiT-B distilled 384 start point; positional encodings adapted from the image grid",
               n_classes=1000, imagenet=True, labels=None),
    ArchConfig("passt_s_swa_p16_128_ap476", _release("v0.0.1-audioset", "passt-s-f128-p16-s10-ap.476-swa.pt"),
               "PaSST-S AudioSet, stride 10, structured patchout, SWA, mAP .476"),
    ArchConfig("passt_s_swa_p16_128_ap4761", _release("v0.0.2-audioset", "passt-s-f128-p16-s10-ap.4761-swa.pt"),
               "PaSST-S AudioSet, stride 10, SWA, mAP .4761 (second run)"),
    ArchConfig("passt_s_p16_128_ap472", _release("v0.0.2-audioset", "passt-s-f128-p16-s10-ap.472.pt"),
               "PaSST-S AudioSet, stride 10, no SWA, mAP .472"),
    ArchConfig("passt_s_kd_p16_128_ap486", _release("v.0.0.9", "passt-s-kd-ap.486.pt"),
               "PaSST-S AudioSet trained with knowledge distillation, stride 10, mAP .486"),
    ArchConfig("passt_l_kd_p16_128_ap47", _release("v.0.0.10", "passt-l-kd-ap.47.pt"),
               "PaSST-L (light, depth 7) AudioSet with knowledge distillation, stride 10, mAP .47", depth=7),
    ArchConfig("passt_s_p16_s12_128_ap470", _release("v0.0.2-audioset", "passt-s-f128-p16-s12-ap.470.pt"),
               "PaSST-S AudioSet, stride 12, mAP .470", fstride=12, tstride=12),
    ArchConfig("passt_s_swa_p16_s12_128_ap473", _release("v0.0.2-audioset", "passt-s-f128-p16-s12-ap.473-swa.pt"),
               "PaSST-S AudioSet, stride 12, SWA, mAP .473", fstride=12, tstride=12),
    ArchConfig("passt_s_p16_s14_128_ap469", _release("v0.0.2-audioset", "passt-s-f128-p16-s14-ap.469.pt"),
               "PaSST-S AudioSet, stride 14, mAP .469", fstride=14, tstride=14),
    ArchConfig("passt_s_swa_p16_s14_128_ap471", _release("v0.0.2-audioset", "passt-s-f128-p16-s14-ap.471-swa.pt"),
               "PaSST-S AudioSet, stride 14, SWA, mAP .471", fstride=14, tstride=14),
    ArchConfig("passt_s_p16_s16_128_ap468", _release("v0.0.2-audioset", "passt-s-f128-p16-s16-ap.468.pt"),
               "PaSST-S AudioSet, stride 16 (no patch overlap), mAP .468", fstride=16, tstride=16),
    ArchConfig("passt_s_swa_p16_s16_128_ap473", _release("v0.0.2-audioset", "passt-s-f128-p16-s16-ap.473-swa.pt"),
               "PaSST-S AudioSet, stride 16, SWA, mAP .473", fstride=16, tstride=16),
    ArchConfig("passt_s_f128_20sec_p16_s10_ap474",
               _release("v0.0.5", "passt-s-f128-20sec-p16-s10-ap.474-swa.pt"),
               "PaSST-S AudioSet with 20 s time encodings (2000 frames), SWA, mAP .474", input_tdim=2000),
    ArchConfig("passt_s_f128_30sec_p16_s10_ap473",
               _release("v0.0.5", "passt-s-f128-30sec-p16-s10-ap.473-swa.pt"),
               "PaSST-S AudioSet with 30 s time encodings (3000 frames), SWA, mAP .473", input_tdim=3000),
    ArchConfig("passt_s_swa_f128_stfthop100_p16_s10_ap473",
               _release("v0.0.3-audioset", "passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt"),
               "PaSST-S AudioSet on STFT hop 100 (3200 frames per 10 s), SWA, mAP .473", input_tdim=3200,
               hopsize=100),
    ArchConfig("passt_s_swa_f128_stfthop160_p16_s10_ap473",
               _release("v0.0.3-audioset", "passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt"),
               "PaSST-S AudioSet on STFT hop 160 (2000 frames per 10 s), SWA, mAP .473", input_tdim=2000,
               hopsize=160),
    ArchConfig("openmic_passt_s_f128_10sec_p16_s10_ap85",
               _release("v0.0.5", "openmic-passt-s-f128-10sec-p16-s10-ap.85.pt"),
               "PaSST-S fine-tuned on OpenMIC-2018 (20 instruments), mAP .85", n_classes=20, labels="openmic"),
    ArchConfig("fsd50k_passt_s_f128_p16_s10_ap655",
               _release("v0.0.5", "fsd50k-passt-s-f128-p16-s10-ap.655.pt"),
               "PaSST-S fine-tuned on FSD50K (200 classes), stride 10, mAP .655", n_classes=200,
               labels="fsd50k"),
    ArchConfig("fsd50k_passt_s_n_f128_p16_s16_ap642",
               _release("v0.0.5", "fsd50k-passt-s-n-f128-p16-s16-ap.642.pt"),
               "PaSST-S fine-tuned on FSD50K, stride 16 (no overlap), mAP .642",
               fstride=16, tstride=16, n_classes=200, labels="fsd50k"),
    ArchConfig("passt_b_f128_p16_s16_ap_459", _release("v.0.0.7-audioset", "passt-b-f128-p16-s16-ap.459.pt"),
               "PaSST-B: AudioSet, stride 16, trained without patchout, mAP .459", fstride=16, tstride=16),
    ArchConfig("passt_u600_f128_p16_s16_ap_460", _release("v.0.0.7-audioset", "passt-u600-f128-p16-s16-ap.460.pt"),
               "PaSST-U600: AudioSet, stride 16, unstructured patchout of 600 patches, mAP .460",
               fstride=16, tstride=16),
]

#: Every released architecture by name.
ARCHS: dict[str, ArchConfig] = {a.name: a for a in _ARCH_LIST}

#: other names of architectures, used by the hear21passt package
ARCH_ALIASES: dict[str, str] = {
    "passt_20sec": "passt_s_f128_20sec_p16_s10_ap474",
    "passt_30sec": "passt_s_f128_30sec_p16_s10_ap473",
    "stfthop100": "passt_s_swa_f128_stfthop100_p16_s10_ap473",
    "stfthop160": "passt_s_swa_f128_stfthop160_p16_s10_ap473",
    "openmic": "openmic_passt_s_f128_10sec_p16_s10_ap85",
    "openmic2008": "openmic_passt_s_f128_10sec_p16_s10_ap85",
    "fsd50k": "fsd50k_passt_s_f128_p16_s10_ap655",
    "fsd50k-n": "fsd50k_passt_s_n_f128_p16_s16_ap642",
}

#: the original framework's named configs for released models: short name -> architecture
SHORT_NAMES: dict[str, str] = {
    "passt_s_ap476": "passt_s_swa_p16_128_ap476",
    "passt_s_ap4763": "passt_s_swa_p16_128_ap4761",  # the original named the ap.4761 release "ap4763"
    "passt_s_ap472": "passt_s_p16_128_ap472",
    "passt_s_20sec": "passt_s_f128_20sec_p16_s10_ap474",
    "passt_s_30sec": "passt_s_f128_30sec_p16_s10_ap473",
}

#: the original's ensembles of released AudioSet models: name -> (the mAP they reach, members)
ENSEMBLES: dict[str, tuple[str, list[str]]] = {
    "ensemble_s10": (".4864", ["passt_s_swa_p16_128_ap476", "passt_s_swa_p16_128_ap4761", "passt_s_p16_128_ap472"]),
    "ensemble_many": (".4956", [
        "passt_s_swa_p16_128_ap476", "passt_s_swa_p16_128_ap4761", "passt_s_p16_128_ap472",
        "passt_s_p16_s12_128_ap470", "passt_s_swa_p16_s12_128_ap473", "passt_s_p16_s14_128_ap469",
        "passt_s_swa_p16_s14_128_ap471", "passt_s_swa_p16_s16_128_ap473", "passt_s_p16_s16_128_ap468"]),
    "ensemble_4": (".4926", ["passt_s_swa_p16_128_ap476", "passt_s_swa_p16_s12_128_ap473",
                             "passt_s_swa_p16_s14_128_ap471", "passt_s_swa_p16_s16_128_ap473"]),
    "ensemble_5": (".49459", ["passt_s_swa_p16_128_ap476", "passt_s_swa_p16_128_ap4761",
                              "passt_s_swa_p16_s12_128_ap473", "passt_s_swa_p16_s14_128_ap471",
                              "passt_s_swa_p16_s16_128_ap473"]),
    "ensemble_s16_14": (".48579", ["passt_s_swa_p16_s14_128_ap471", "passt_s_swa_p16_s16_128_ap473"]),
}


#: the best single released AudioSet model (mAP .486): the default of get_model and of the commands
DEFAULT_ARCH = "passt_s_kd_p16_128_ap486"

#: what hear21passt.base loads: the default of the HEAR API
HEAR_DEFAULT_ARCH = "passt_s_swa_p16_128_ap476"

#: the AudioSet-trained PaSST-S that ESC-50, OpenMIC, FSD50K and your own data are fine-tuned from
#: (the original's get_model default; its paper results started from passt_s_swa_p16_128_ap476)
FINETUNE_FROM = DEFAULT_ARCH


# ----------------------------------------------------------------------------------- label sets
@dataclass(frozen=True)
class LabelSet:
    """The class names of a dataset's outputs, in output order.

    Either listed here (``names``), or read from a file fetched once from ``url`` into the torch
    hub cache (``cache_file``, relative to ``torch.hub.get_dir()``); when ``url`` is a zip archive,
    the file is its ``member``. ``file_format`` says how :mod:`models.labels` reads the file.
    """

    name: str
    n_classes: int
    description: str
    names: tuple[str, ...] = ()
    url: str = ""
    cache_file: str = ""
    member: str = ""
    file_format: str = ""


LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in [
    LabelSet("audioset", 527, "the AudioSet ontology's 527 classes (class_labels_indices.csv)",
             url="http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv",
             cache_file="audioset/class_labels_indices.csv", file_format="audioset_csv"),
    LabelSet("fsd50k", 200, "FSD50K's 200 classes (vocabulary.csv of its ground truth)",
             url="https://zenodo.org/record/4060432/files/FSD50K.ground_truth.zip?download=1",
             cache_file="fsd50k/vocabulary.csv", member="FSD50K.ground_truth/vocabulary.csv",
             file_format="fsd50k_vocabulary"),
    LabelSet("openmic", 20, "OpenMIC-2018's 20 instruments (class-map.json of its release)", names=(
        "accordion", "banjo", "bass", "cello", "clarinet", "cymbals", "drums", "flute", "guitar",
        "mallet_percussion", "mandolin", "organ", "piano", "saxophone", "synthesizer", "trombone", "trumpet",
        "ukulele", "violin", "voice")),
]}


# ------------------------------------------------------------------------------------- resolver
@dataclass(frozen=True)
class ModelChoice:
    """What a model name resolves to: one released architecture, or the members of an ensemble."""

    name: str  # the architecture's or the ensemble's own name
    members: tuple[ArchConfig, ...]
    is_ensemble: bool = False

    @property
    def arch(self) -> ArchConfig:
        """The architecture (an error for an ensemble)."""
        if self.is_ensemble:
            raise ValueError(f"{self.name} is an ensemble of {len(self.members)} architectures, not one")
        return self.members[0]


def known_names() -> str:
    """Every name :func:`resolve_model` takes, for error messages."""
    return (f"architectures: {', '.join(sorted(ARCHS))}; aliases: {', '.join(sorted(ARCH_ALIASES))}; "
            f"short names: {', '.join(SHORT_NAMES)}; ensembles: {', '.join(ENSEMBLES)}")


def resolve_arch(name: str) -> ArchConfig:
    """A released architecture by its name, an alias or a short name; the error lists every known name."""
    if name in ENSEMBLES:
        raise ValueError(f"{name} is an ensemble, not one architecture: build it with "
                         f"models.build.get_ensemble_model or name a single architecture ({known_names()})")
    arch = ARCHS.get(SHORT_NAMES.get(name) or ARCH_ALIASES.get(name) or name)
    if arch is None:
        raise ValueError(f"Unknown PaSST model {name!r}. Known {known_names()}")
    return arch


def resolve_model(name: str) -> ModelChoice:
    """Any model name a user can type (architecture, alias, short name, ensemble) to what to build."""
    if name in ENSEMBLES:
        return ModelChoice(name, tuple(resolve_arch(member) for member in ENSEMBLES[name][1]), is_ensemble=True)
    arch = resolve_arch(name)
    return ModelChoice(arch.name, (arch,))

"""Released models by the other names users type: the original framework's short names and ensembles.

Data only, read by ``inference.py`` (and through it by the web demo ``app.py`` and ``export.py``)
and turned into named configs by ``config_updates.py``; kept here so that none of them needs the
sacred config layer to resolve a name. The architectures themselves (release URLs, training
settings, aliases) are :data:`models.passt.ARCHS` and :data:`models.passt.ARCH_ALIASES`.
"""

from __future__ import annotations

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

"""The HEAR API here (``helpers.inference.hear``) against the original ``hear21passt`` package.

Both wrap networks of the released size holding the same random weights (the released files
cannot be fetched here) and the same front-end settings; this compares what HEAR users get:
timestamp embeddings and their timestamps, scene embeddings of audio shorter than the model's
window (one pass) and longer (mean over windows), for PaSST-S as ``hear21passt.base`` builds it,
the 20 s model (``base20sec``) and the STFT-hop-160 model (``hop160base``), in each mode.

The original is only a scratch reference, never a dependency:

    pip install --no-deps --target /tmp/hear21 hear21passt==0.0.26
    PYTHONPATH=/tmp/hear21 .venv/bin/python benchmarks/compare_hear.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import torch
from compare_original import original_network

from helpers.inference import hear
from helpers.inference.model import InferenceModel
from models.build import get_model
from models.passt_weights import load_state_dict_into
from models.preprocess import AugmentMelSTFT
from models.registry import ARCHS

SR = 32000
#: hear21passt module -> (arch, its wrapper's max_model_window and scene_hop in ms, seconds of long audio)
CASES = {
    "base": ("passt_s_swa_p16_128_ap476", 10000, 2500, 23.0),
    "base20sec": ("passt_s_f128_20sec_p16_s10_ap474", 20000, 5000, 27.0),
    "hop160base": ("passt_s_swa_f128_stfthop160_p16_s10_ap473", 10000, 2500, 13.0),
}


def pair(arch: str, window_ms: int, scene_hop_ms: int, mode: str):
    """The original wrapper and ours, with the same random weights."""
    from hear21passt.models.preprocess import AugmentMelSTFT as OriginalMel
    from hear21passt.wrapper import PasstBasicWrapper

    cfg = ARCHS[arch]
    torch.manual_seed(0)
    ref_net = original_network(cfg).eval()
    # the front end exactly as hear21passt's modules build it
    mel = OriginalMel(n_mels=128, sr=SR, win_length=800, hopsize=cfg.hopsize, n_fft=1024, freqm=48, timem=192,
                      htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    ref = PasstBasicWrapper(mel=mel, net=ref_net, max_model_window=window_ms,
                            scene_hop=scene_hop_ms, mode=mode).eval()
    net = get_model(arch=cfg.name, pretrained=False, n_classes=cfg.n_classes, fstride=cfg.fstride,
                    tstride=cfg.tstride, input_tdim=cfg.input_tdim)
    load_state_dict_into(net, ref_net.state_dict(), trained_stride=(cfg.fstride, cfg.tstride))
    ours = hear.configure(InferenceModel(net, AugmentMelSTFT(hopsize=cfg.hopsize), name=cfg.name).place("cpu", "fp32"),
                          mode=mode)
    assert ours.max_model_window == ref.max_model_window and ours.scene_hop == ref.scene_hop
    return ref, ours


def quiet(fn, *args):
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def main() -> None:
    try:
        import hear21passt  # noqa: F401
    except ImportError:
        sys.exit("hear21passt is not importable: see this script's docstring for the scratch install.")
    g = torch.Generator().manual_seed(1)
    print("| module | mode | compared | shape | max abs diff |\n|---|---|---|---|---|", flush=True)
    worst = 0.0
    for module, (arch, window_ms, scene_hop_ms, long_s) in CASES.items():
        modes = ("all", "embed_only", "logits") if module == "base" else ("all",)
        for mode in modes:
            ref, ours = pair(arch, window_ms, scene_hop_ms, mode)
            checks = {"timestamp embeddings (3 s)": (torch.randn(2, 3 * SR, generator=g) * 0.1, "timestamp"),
                      "scene embedding (7 s, one pass)": (torch.randn(2, 7 * SR, generator=g) * 0.1, "scene")}
            if mode == "all":
                checks[f"scene embedding ({long_s:g} s, windows)"] = (
                    torch.randn(1, int(long_s * SR), generator=g) * 0.1, "scene")
            for what, (audio, kind) in checks.items():
                if kind == "timestamp":
                    (ref_emb, ref_ts) = quiet(ref.get_timestamp_embeddings, audio)
                    emb, ts = quiet(hear.get_timestamp_embeddings, audio, ours)
                    if not torch.equal(ref_ts.float(), ts):
                        sys.exit(f"{module}: timestamps differ: {ref_ts[0, :5]} vs {ts[0, :5]}")
                else:
                    ref_emb = quiet(ref.get_scene_embeddings, audio)
                    emb = quiet(hear.get_scene_embeddings, audio, ours)
                if ref_emb.shape != emb.shape:
                    sys.exit(f"{module} {mode} {what}: shapes differ: {tuple(ref_emb.shape)} vs {tuple(emb.shape)}")
                diff = (ref_emb.cpu() - emb).abs().max().item()
                worst = max(worst, diff)
                print(f"| {module} | {mode} | {what} | {tuple(emb.shape)} | {diff:.2e} |", flush=True)
    print(f"\nworst difference {worst:.2e} (tolerance 1e-4); timestamps identical")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()

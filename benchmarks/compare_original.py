"""Compare this implementation with the original one (the ``hear21passt`` package) at full size.

For every registered architecture, both networks are built at the released size with the same
random weights (the released files cannot be fetched here), and eval-mode logits and embeddings
are compared on a full-length and a shorter input; then the mel front end, for each STFT hop.

The original is only a scratch reference, never a dependency:

    pip install --no-deps --target /tmp/hear21 hear21passt==0.0.26
    PYTHONPATH=/tmp/hear21 .venv/bin/python benchmarks/compare_original.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import torch

from models.build import get_model
from models.passt_weights import load_state_dict_into
from models.preprocess import AugmentMelSTFT
from models.registry import ARCHS


def original_network(cfg, **kwargs):
    """The original PaSST class, at the size and settings of ``cfg``."""
    from hear21passt.models.passt import PaSST as OriginalPaSST

    with contextlib.redirect_stdout(io.StringIO()):  # the original prints its progress
        return OriginalPaSST(img_size=(cfg.input_fdim, cfg.input_tdim), stride=(cfg.fstride, cfg.tstride),
                             patch_size=16, in_chans=1, num_classes=cfg.n_classes, embed_dim=cfg.embed_dim,
                             depth=cfg.depth, num_heads=cfg.num_heads, distilled=True, **kwargs)


def compare_networks(lengths=(None, 500)) -> list[tuple[str, float, float]]:
    rows = []
    for cfg in ARCHS.values():
        torch.manual_seed(0)
        ref = original_network(cfg).eval()
        ours = get_model(arch=cfg.name, pretrained=False, n_classes=cfg.n_classes, fstride=cfg.fstride,
                         tstride=cfg.tstride, input_tdim=cfg.input_tdim).eval()
        load_state_dict_into(ours, ref.state_dict(), trained_stride=(cfg.fstride, cfg.tstride))
        worst_logit = worst_emb = 0.0
        for frames in lengths:
            x = torch.randn(2, 1, cfg.input_fdim, frames or cfg.input_tdim)
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref_logits, ref_emb = ref(x)
                logits, emb = ours(x)
            worst_logit = max(worst_logit, (ref_logits - logits).abs().max().item())
            worst_emb = max(worst_emb, (ref_emb - emb).abs().max().item())
        rows.append((cfg.name, worst_logit, worst_emb))
        print(f"| {cfg.name} | {worst_logit:.2e} | {worst_emb:.2e} |", flush=True)
    return rows


def compare_front_end() -> list[tuple[str, float]]:
    from hear21passt.models.preprocess import AugmentMelSTFT as OriginalMel

    rows = []
    for hop in (320, 160, 100):
        ref = OriginalMel(hopsize=hop, fmin_aug_range=10, fmax_aug_range=2000).eval()
        ours = AugmentMelSTFT(hopsize=hop).eval()
        wave = torch.randn(4, 320000) * 0.1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            diff = (ref(wave) - ours(wave)).abs().max().item()
        rows.append((f"mel hop {hop}", diff))
        print(f"| AugmentMelSTFT hop={hop} | {diff:.2e} | |", flush=True)
    return rows


def main() -> None:
    try:
        import hear21passt  # noqa: F401
    except ImportError:
        sys.exit("hear21passt is not importable: see this script's docstring for the scratch install.")
    torch.set_num_threads(torch.get_num_threads())
    print("| compared | max abs diff, logits | max abs diff, embedding |\n|---|---|---|")
    rows = compare_networks()
    mel_rows = compare_front_end()
    worst = max(max(r[1], r[2]) for r in rows)
    worst_mel = max(r[1] for r in mel_rows)
    print(f"\nworst network difference {worst:.2e}, worst front-end difference {worst_mel:.2e} (tolerance 1e-4)")
    sys.exit(0 if max(worst, worst_mel) < 1e-4 else 1)


if __name__ == "__main__":
    main()

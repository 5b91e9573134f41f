"""The model registry: every name a user can type resolves, and every output carries its label set's names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from helpers.inference.cli import class_names_for
from helpers.inference.model import load_model
from models import labels
from models.build import get_model
from models.hub_cache import cache_path
from models.registry import (
    ARCH_ALIASES,
    ARCHS,
    ENSEMBLES,
    LABEL_SETS,
    SHORT_NAMES,
    ArchConfig,
    resolve_arch,
    resolve_model,
)

ALL_NAMES = [*ARCHS, *ARCH_ALIASES, *SHORT_NAMES, *ENSEMBLES]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_name_resolves(name):
    choice = resolve_model(name)
    assert choice.members and all(arch is ARCHS[arch.name] for arch in choice.members)
    assert choice.is_ensemble == (name in ENSEMBLES)
    if not choice.is_ensemble:
        assert resolve_arch(name) is choice.arch
    else:
        assert [a.name for a in choice.members] == ENSEMBLES[name][1]
        with pytest.raises(ValueError, match="is an ensemble"):
            resolve_arch(name)


def test_unknown_name_lists_every_kind_of_name():
    with pytest.raises(ValueError) as err:
        resolve_model("passt_s_ap999")
    message = str(err.value)
    assert all(word in message for word in ("architectures:", "aliases:", "short names:", "ensembles:"))
    assert "passt_s_ap476" in message and "ensemble_s10" in message


def test_every_architecture_names_a_label_set_of_its_size():
    for arch in ARCHS.values():
        if arch.imagenet:
            assert arch.labels is None
        else:
            assert LABEL_SETS[arch.labels].n_classes == arch.n_classes, arch.name
    assert resolve_arch("openmic").labels == "openmic" and resolve_arch("fsd50k-n").labels == "fsd50k"
    assert labels.class_names("openmic")[:3] == ["accordion", "banjo", "bass"]
    assert len(labels.class_names("openmic")) == 20


def test_short_names_build_with_get_model():
    net = get_model(arch="passt_s_20sec", pretrained=False, depth=1, embed_dim=32, num_heads=2)
    assert net.arch == "passt_s_f128_20sec_p16_s10_ap474"


def _ground_truth_zip(n: int = 200) -> bytes:
    """FSD50K's ground-truth archive as Zenodo serves it, with a made-up vocabulary."""
    rows = "".join(f"{i},Sound_{i},/m/fake{i:03d}\n" for i in range(n))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("FSD50K.ground_truth/vocabulary.csv", rows)
        zf.writestr("FSD50K.ground_truth/dev.csv", "fname,labels,mids,split\n")
    return buffer.getvalue()


def test_fsd50k_names_are_fetched_once_from_the_ground_truth_zip(offline_home, monkeypatch):
    with pytest.raises(RuntimeError) as err:
        labels.class_names("fsd50k")
    assert LABEL_SETS["fsd50k"].url in str(err.value) and "vocabulary.csv" in str(err.value)

    fetched = []

    def serve(url, dst, *args, **kwargs):
        fetched.append(url)
        Path(dst).write_bytes(_ground_truth_zip())

    monkeypatch.setattr(torch.hub, "download_url_to_file", serve)
    names = labels.class_names("fsd50k")
    assert names[:2] == ["Sound_0", "Sound_1"] and len(names) == 200
    cached = offline_home / "hub" / "fsd50k" / "vocabulary.csv"
    assert cached.is_file() and list(cached.parent.iterdir()) == [cached]  # the zip is not kept
    assert labels.class_names("fsd50k") == names and fetched == [LABEL_SETS["fsd50k"].url]


def test_a_released_fsd50k_model_is_named_by_its_label_set(offline_home, monkeypatch):
    """Tagging with a released FSD50K model (here a tiny stand-in) names its 200 outputs by FSD50K's vocabulary."""
    cfg = ArchConfig("tiny_fsd50k", "https://example.invalid/tiny-fsd50k.pt", "test only", n_classes=200,
                     embed_dim=32, depth=1, num_heads=2, input_tdim=200, labels="fsd50k")
    monkeypatch.setitem(ARCHS, cfg.name, cfg)
    path = cache_path(cfg.url)
    path.parent.mkdir(parents=True)
    torch.save(get_model(pretrained=False, n_classes=200, embed_dim=32, depth=1, num_heads=2,
                         input_tdim=200).state_dict(), path)
    (offline_home / "hub" / "fsd50k").mkdir()
    (offline_home / "hub" / "fsd50k" / "vocabulary.csv").write_text("".join(f"{i},Sound_{i},/m/x{i}\n" for i in range(200)))
    model = load_model("tiny_fsd50k")
    assert model.label_set == "fsd50k"
    assert class_names_for(model, None)[199] == "Sound_199"

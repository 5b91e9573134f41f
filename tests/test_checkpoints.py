"""Loading what users have: release files (offline cache), Lightning .ckpt, ImageNet, mismatches."""

import urllib.error
import warnings

import pytest
import torch
from original_layout import original_forward, original_state_dict

from models.build import get_model
from models.checkpoints import CheckpointError
from models.hub_cache import cache_path
from models.passt import patch_grid
from models.passt_weights import load_weights
from models.registry import ARCHS, ArchConfig

TINY = dict(pretrained=False, depth=2, embed_dim=64, num_heads=4)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def tiny_release(monkeypatch):
    """A released architecture of tiny size, registered for the duration of a test."""
    cfg = ArchConfig("tiny_release", "https://example.invalid/releases/tiny-release.pt", "test only",
                     embed_dim=64, depth=2, num_heads=4)
    monkeypatch.setitem(ARCHS, cfg.name, cfg)
    return cfg


def _no_network(monkeypatch):
    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_pretrained_uses_cached_release_without_network(torch_home, tiny_release, monkeypatch):
    _no_network(monkeypatch)
    sd = original_state_dict(embed_dim=64, depth=2)
    path = cache_path(tiny_release.url)
    assert path == torch_home / "hub" / "checkpoints" / "tiny-release.pt"
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching configuration: no warning at all
        model = get_model(arch="tiny_release", pretrained=True).eval()
    x = torch.randn(2, 1, 128, 998)
    torch.testing.assert_close(model(x)[0], original_forward(sd, x, (10, 10), 4)[0], atol=1e-4, rtol=0)


def test_download_goes_to_the_hub_cache(torch_home, tiny_release, monkeypatch):
    sd = original_state_dict(embed_dim=64, depth=2)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        torch.save(sd, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    get_model(arch="tiny_release", pretrained=True)
    get_model(arch="tiny_release", pretrained=True)  # second time: from the cache
    assert calls == [tiny_release.url]
    assert cache_path(tiny_release.url).is_file()


def test_offline_without_file_names_url_and_path(torch_home, tiny_release, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(RuntimeError) as err:
        get_model(arch="tiny_release", pretrained=True)
    assert tiny_release.url in str(err.value)
    assert str(cache_path(tiny_release.url)) in str(err.value)


def test_corrupt_release_names_file_and_how_to_fetch_again(torch_home, tiny_release):
    path = cache_path(tiny_release.url)
    path.parent.mkdir(parents=True)
    torch.save(original_state_dict(embed_dim=64, depth=2), path)
    path.write_bytes(path.read_bytes()[:1000])  # truncated download
    with pytest.raises(CheckpointError) as err:
        get_model(arch="tiny_release", pretrained=True)
    assert str(path) in str(err.value) and tiny_release.url in str(err.value)
    assert "download it again" in str(err.value)


def test_garbage_local_file_is_reported(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="model.ckpt"):
        load_weights(get_model(**TINY), bad)


def test_lightning_checkpoint_picks_net_or_swa_weights(tmp_path):
    live, swa = original_state_dict(seed=1), original_state_dict(seed=2)
    ckpt = {"epoch": 3, "state_dict": {**{f"net.{k}": v for k, v in live.items()},
                                       **{f"net_swa.{k}": v for k, v in swa.items()},
                                       "mel.window": torch.ones(800)},
            "hyper_parameters": {"config": {"lr": 1e-5}}}
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    x = torch.randn(1, 1, 128, 998)
    for use_swa, sd in ((False, live), (True, swa)):
        model = load_weights(get_model(**TINY), path, swa=use_swa).eval()
        torch.testing.assert_close(model(x)[0], original_forward(sd, x, (10, 10), 4)[0], atol=1e-4, rtol=0)


def test_swa_requested_from_checkpoint_without_swa(tmp_path):
    torch.save({"state_dict": {f"net.{k}": v for k, v in original_state_dict().items()}}, tmp_path / "a.ckpt")
    with pytest.raises(KeyError, match="net_swa"):
        load_weights(get_model(**TINY), tmp_path / "a.ckpt", swa=True)


def test_compiled_prefix_is_removed(tmp_path):
    """A state dict saved from a ``torch.compile`` wrapper loads with every weight in its place."""
    sd = original_state_dict()
    torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, tmp_path / "compiled.pt")
    loaded = load_weights(get_model(**TINY), tmp_path / "compiled.pt").state_dict()
    assert set(loaded) == set(sd)
    for key, value in sd.items():
        assert torch.equal(loaded[key], value), key


def test_other_n_classes_reinitialises_heads_with_one_warning(tmp_path):
    sd = original_state_dict(n_classes=527)
    torch.save(sd, tmp_path / "as.pt")
    model = get_model(**TINY, n_classes=50)
    with pytest.warns(UserWarning, match="re-initialised for 50 classes") as record:
        load_weights(model, tmp_path / "as.pt")
    assert len(record) == 1
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    torch.testing.assert_close(model.head[0].weight, sd["head.0.weight"])  # the head's norm stays
    assert model.head[1].weight.shape == (50, 64)


def test_other_strides_interpolate_encodings(tmp_path):
    sd = original_state_dict(grid=patch_grid(128, 998, 10, 10))
    torch.save(sd, tmp_path / "s10.pt")
    model = get_model(**TINY, fstride=16, tstride=16)
    with pytest.warns(UserWarning, match="interpolated"):
        load_weights(model, tmp_path / "s10.pt", trained_stride=(10, 10))
    assert model.freq_new_pos_embed.shape[2] == 8 and model.time_new_pos_embed.shape[3] == 62
    assert torch.isfinite(model.eval()(torch.randn(1, 1, 128, 998))[0]).all()


def test_other_clip_length_adopts_released_time_encodings(tmp_path):
    sd = original_state_dict(grid=(12, 199))  # a model released for 20 s clips
    torch.save(sd, tmp_path / "20s.pt")
    model = get_model(**TINY, input_tdim=998)
    load_weights(model, tmp_path / "20s.pt")
    assert model.time_new_pos_embed.shape[3] == 199
    x = torch.randn(1, 1, 128, 1500)
    torch.testing.assert_close(model.eval()(x)[0], original_forward(sd, x, (10, 10), 4)[0], atol=1e-4, rtol=0)


def test_depth_mismatch_is_a_clear_error(tmp_path):
    torch.save(original_state_dict(depth=3), tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match="blocks.2"):
        load_weights(get_model(**TINY), tmp_path / "deep.pt")


def test_another_width_is_another_network_not_new_heads(tmp_path):
    torch.save(original_state_dict(embed_dim=32, n_classes=10), tmp_path / "narrow.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "heads re-initialised for 10 classes (the checkpoint has 10)"
        with pytest.raises(CheckpointError) as err:
            load_weights(get_model(**TINY, n_classes=10), tmp_path / "narrow.pt")
    message = str(err.value)
    assert "holds another network than this PaSST" in message and "of its tensors have other shapes" in message
    assert "(e.g. cls_token: [1, 1, 32] in the file, [1, 1, 64] here)" in message


def test_a_checkpoint_record_fixes_the_network_keys_and_nothing_else(tmp_path):
    from models.build import adopt_checkpoint_networks, build_mel, build_net

    trained = {"net": {"arch": "passt_s_swa_p16_128_ap476", "n_classes": 4, "depth": 1, "embed_dim": 32,
                       "num_heads": 2, "input_fdim": 64, "input_tdim": 200, "fstride": 10, "tstride": 10,
                       "s_patchout_t": 2, "pretrained": False},
               "mel": {"n_mels": 64, "hopsize": 320, "freqm": 8, "timem": 20, "fmax": None, "fmax_aug_range": 2000},
               "ensemble": [], "checkpoint": None}
    net = build_net({**trained, "net": dict(trained["net"])})
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "passt": {"models": trained, "class_names": list("abcd")}}, tmp_path / "small.ckpt")
    mine = {"net": {"arch": "passt_s_kd_p16_128_ap486", "n_classes": 7, "depth": None, "input_fdim": 128,
                    "input_tdim": 998, "fstride": 10, "tstride": 10, "s_patchout_t": 40, "pretrained": True},
            "mel": {"n_mels": 128, "hopsize": 320, "freqm": 48, "timem": 192, "fmax_aug_range": 1000},
            "ensemble": [], "checkpoint": str(tmp_path / "small.ckpt")}
    cfg, taken, records = adopt_checkpoint_networks(mine)
    assert taken == {"models.net.arch": ("passt_s_kd_p16_128_ap486", "passt_s_swa_p16_128_ap476"),
                     "models.net.input_fdim": (128, 64), "models.net.input_tdim": (998, 200),
                     "models.net.depth": (None, 1), "models.net.embed_dim": (None, 32), "models.net.num_heads": (None, 2),
                     "models.mel.n_mels": (128, 64),
                     "models.mel.fmax": (None, 15000)}  # what the trained front end derived from its shift range
    assert cfg["net"]["s_patchout_t"] == 40 and cfg["net"]["n_classes"] == 7 and cfg["mel"]["freqm"] == 48
    assert records[str(tmp_path / "small.ckpt")]["class_names"] == list("abcd")
    with pytest.warns(UserWarning, match="re-initialised for 7 classes"):
        built = build_net(cfg)  # fine-tuning onto 7 classes: the rest loads
    torch.testing.assert_close(built.blocks[0].attn.qkv.weight, net.blocks[0].attn.qkv.weight)
    assert build_mel(cfg["mel"]).fmax == 15000
    assert adopt_checkpoint_networks({**mine, **cfg})[1] == {}  # nothing left to take

    torch.save(net.state_dict(), tmp_path / "plain.pt")  # no record: the config decides, nothing is taken
    assert adopt_checkpoint_networks({**mine, "checkpoint": str(tmp_path / "plain.pt")})[1:] == ({}, {})
    other = {**trained, "mel": {**trained["mel"], "hopsize": 160}}
    torch.save({"state_dict": {}, "passt": {"models": other}}, tmp_path / "hop160.ckpt")
    members = [{"arch": "passt_s_swa_p16_128_ap476", "fstride": 10, "tstride": 10, "checkpoint": str(p)}
               for p in (tmp_path / "small.ckpt", tmp_path / "hop160.ckpt")]
    with pytest.raises(CheckpointError, match="share one mel front end.*models.mel.hopsize"):
        adopt_checkpoint_networks({**mine, "checkpoint": None, "ensemble": members})


def test_imagenet_checkpoint_is_adapted(tmp_path):
    e = 64
    sd = {k: v for k, v in original_state_dict(embed_dim=e).items() if "pos_embed" not in k}
    sd["patch_embed.proj.weight"] = torch.randn(e, 3, 16, 16)  # RGB
    sd["pos_embed"] = torch.randn(1, 2 + 24 * 24, e)  # DeiT-384: 24x24 grid + 2 tokens
    sd["head.weight"], sd["head.bias"] = torch.randn(1000, e), torch.randn(1000)
    sd["head_dist.weight"], sd["head_dist.bias"] = torch.randn(1000, e), torch.randn(1000)
    del sd["head.0.weight"], sd["head.0.bias"], sd["head.1.weight"], sd["head.1.bias"]
    torch.save({"model": sd}, tmp_path / "deit.pth")
    model = get_model(**TINY)
    load_weights(model, tmp_path / "deit.pth")
    torch.testing.assert_close(model.patch_embed.proj.weight, sd["patch_embed.proj.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(model.new_pos_embed, sd["pos_embed"][:, :2])
    grid = sd["pos_embed"][0, 2:].reshape(1, 24, 24, e).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(12, 99), mode="bicubic", align_corners=False)
    torch.testing.assert_close(model.freq_new_pos_embed, resized.mean(3, keepdim=True))
    torch.testing.assert_close(model.time_new_pos_embed, resized.mean(2, keepdim=True))

"""The PaSST network: shapes, patchout, time encodings, fidelity to the original math, bad input."""

import pytest
import torch
from original_layout import original_forward, original_state_dict

from models.build import get_ensemble_model, get_model
from models.ensemble import PaSSTEnsemble
from models.passt import PaSST, cut_blocks, patch_grid
from models.passt_weights import load_state_dict_into
from models.registry import ARCH_ALIASES, ARCHS, resolve_arch

TINY = dict(pretrained=False, depth=2, embed_dim=64, num_heads=4)


def tiny(**kwargs) -> PaSST:
    return get_model(**{**TINY, **kwargs})


def test_forward_returns_logits_and_embedding():
    model = tiny(n_classes=10).eval()
    logits, embedding = model(torch.randn(3, 1, 128, 998))
    assert logits.shape == (3, 10)
    assert embedding.shape == (3, 64)


# every structural family of the released models: strides 10/12/14/16, 10/20/30 s and hop-100/160
# encodings, 527/200/20 classes, depth 12 and 7; tiny widths keep it fast
FAMILIES = [
    dict(fstride=10, tstride=10, input_tdim=998, n_classes=527),
    dict(fstride=12, tstride=12, input_tdim=998, n_classes=527),
    dict(fstride=14, tstride=14, input_tdim=998, n_classes=527),
    dict(fstride=16, tstride=16, input_tdim=998, n_classes=527),
    # the long-clip families run up to 3200 frames through the reference implementation too
    pytest.param(dict(fstride=10, tstride=10, input_tdim=2000, n_classes=527), marks=pytest.mark.slow),
    pytest.param(dict(fstride=10, tstride=10, input_tdim=3000, n_classes=527), marks=pytest.mark.slow),
    pytest.param(dict(fstride=10, tstride=10, input_tdim=3200, n_classes=527), marks=pytest.mark.slow),
    dict(fstride=10, tstride=10, input_tdim=998, n_classes=20),
    dict(fstride=16, tstride=16, input_tdim=998, n_classes=200),
]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: "s{fstride}_t{input_tdim}_c{n_classes}".format(**f))
def test_matches_original_math_for_every_family(family):
    grid = patch_grid(128, family["input_tdim"], family["fstride"], family["tstride"])
    sd = original_state_dict(embed_dim=64, depth=2, n_classes=family["n_classes"], grid=grid)
    model = tiny(**family).eval()
    load_state_dict_into(model, sd, trained_stride=(family["fstride"], family["tstride"]))
    stride = (family["fstride"], family["tstride"])
    frames = family["input_tdim"] + 2  # what the mel front end yields for those clips
    for t in (min(frames, family["input_tdim"]), 400):  # full length and shorter than the encodings
        x = torch.randn(2, 1, 128, t)
        with torch.no_grad():
            logits, emb = model(x)
        ref_logits, ref_emb = original_forward(sd, x, stride, num_heads=4)
        torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(emb, ref_emb, atol=1e-4, rtol=0)


def test_depth_seven_family_matches():
    sd = original_state_dict(embed_dim=32, depth=7, grid=(12, 99))
    model = get_model(pretrained=False, depth=7, embed_dim=32, num_heads=2).eval()
    load_state_dict_into(model, sd)
    x = torch.randn(1, 1, 128, 998)
    torch.testing.assert_close(model(x)[0], original_forward(sd, x, (10, 10), 2)[0], atol=1e-4, rtol=0)


def _sequence_lengths(model: PaSST, x: torch.Tensor) -> list[int]:
    seen = []
    handle = model.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    model(x)
    handle.remove()
    return seen


def test_structured_patchout_drops_rows_and_columns_in_training_only():
    model = tiny(s_patchout_t=40, s_patchout_f=4)
    x = torch.randn(2, 1, 128, 998)
    model.train()
    assert _sequence_lengths(model, x) == [(12 - 4) * (99 - 40) + 2]
    model.eval()
    assert _sequence_lengths(model, x) == [12 * 99 + 2]


def test_unstructured_patchout_drops_patches():
    model = tiny(u_patchout=400, fstride=16, tstride=16).train()
    assert _sequence_lengths(model, torch.randn(2, 1, 128, 998)) == [8 * 62 - 400 + 2]


def test_patchout_keeps_order_and_is_random():
    from models.passt import _random_keep

    a, b = _random_keep(99, 40, torch.device("cpu")), _random_keep(99, 40, torch.device("cpu"))
    assert len(a) == 59 and torch.all(a[1:] > a[:-1])
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="drop"):
        _random_keep(10, 10, torch.device("cpu"))


def test_patchout_indices_are_drawn_on_the_input_device(monkeypatch):
    devices = []
    real = torch.randperm

    def spy(n, *args, **kwargs):
        devices.append(kwargs.get("device"))
        return real(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", spy)
    tiny(s_patchout_t=10, s_patchout_f=2, u_patchout=5).train()(torch.randn(1, 1, 128, 998))
    assert devices == [torch.device("cpu")] * 3


def test_short_input_uses_encodings_from_start_in_eval_and_random_offset_in_training():
    model = tiny(input_tdim=998)
    x = torch.randn(1, 1, 128, 300)  # 29 patches of 99 encodings
    model.eval()
    with torch.no_grad():
        a, b = model(x)[0], model(x)[0]
    torch.testing.assert_close(a, b)  # eval is deterministic
    # eval = the encodings of the first 29 columns
    truncated = tiny(input_tdim=290).eval()  # 29 encodings
    state = model.state_dict()
    state["time_new_pos_embed"] = state["time_new_pos_embed"][..., :29]
    truncated.load_state_dict(state)
    torch.testing.assert_close(truncated(x)[0], a, atol=1e-5, rtol=0)
    # training draws an offset: outputs differ between calls (no dropout or patchout here)
    model.train()
    torch.manual_seed(0)
    outs = {tuple(model(x)[0][0, :3].tolist()) for _ in range(5)}
    assert len(outs) > 1


def test_training_offset_is_uniform_over_the_valid_windows_and_drawn_on_the_device(monkeypatch):
    model = tiny(input_tdim=998).train()  # 99 encodings
    encodings = model.time_new_pos_embed.detach()
    devices = []
    real = torch.randint

    def spy(*args, **kwargs):
        devices.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", spy)
    torch.manual_seed(0)
    counts = torch.zeros(99 - 29 + 1)
    for _ in range(2000):
        window, n = model._time_encodings(29)
        matches = [k for k in range(len(counts)) if torch.equal(window, encodings[..., k:k + 29])]
        assert n == 29 and len(matches) == 1
        counts[matches[0]] += 1
    assert set(devices) == {encodings.device}
    assert (counts > 0).all()  # every valid offset, the last one (70) included, and no other
    assert counts.max() < 3 * counts.mean()  # roughly uniform (expected ~28 each)


@pytest.mark.slow
def test_network_compiles_without_graph_breaks_and_once_for_every_batch_size():
    # fullgraph=True fails on any graph break: training (random offset, patchout) and eval, input
    # shorter than the encodings; a dynamic batch axis (as AudioModule marks it) compiles once, so
    # the last, smaller batch of an epoch does not recompile
    graphs = []

    def count_graphs(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    model = tiny(input_tdim=998, s_patchout_t=3, s_patchout_f=1, u_patchout=5)
    compiled = torch.compile(model, fullgraph=True, backend=count_graphs)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        for batch in (4, 3, 2):
            x = torch.randn(batch, 1, 128, 300)
            torch._dynamo.maybe_mark_dynamic(x, 0)
            logits, _ = compiled(x)
            assert logits.shape == (batch, 527)
    assert len(graphs) == 2  # one per mode, whatever the batch size
    # no value read to the host inside the graph (PyTorch 2.11 traces int(tensor) as .item() rather
    # than breaking the graph: a device sync in the compiled step and a data-dependent shape)
    assert not [n for g in graphs for n in g.graph.nodes if n.op == "call_method" and n.target in ("item", "tolist")]
    torch._dynamo.reset()


def test_longer_input_warns_and_is_cut():
    model = tiny(input_tdim=300).eval()
    long_x = torch.randn(1, 1, 128, 600)
    with pytest.warns(UserWarning, match="cut"):
        out = model(long_x)[0]
    torch.testing.assert_close(out, model(long_x[..., : model.max_frames])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(128, 998), (1, 128, 998), (2, 2, 128, 998), (2, 1, 64, 998), (2, 1, 128, 8)])
def test_wrong_input_shape_states_expected_shape(shape):
    with pytest.raises(ValueError, match=r"\[batch, 1, 128, frames >= 16\]"):
        tiny().eval()(torch.randn(*shape))


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ValueError) as err:
        get_model(arch="passt_xl_nonexistent", pretrained=False)
    assert "passt_s_swa_p16_128_ap476" in str(err.value) and "passt_l_kd_p16_128_ap47" in str(err.value)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_registered_architecture_builds_with_its_release_layout(arch):
    """Built as released (on the meta device: shapes only), the model has the release's keys and grids."""
    cfg = ARCHS[arch]
    with torch.device("meta"):
        model = get_model(arch, pretrained=False, n_classes=cfg.n_classes, fstride=cfg.fstride,
                          tstride=cfg.tstride, input_tdim=cfg.input_tdim)
    state = model.state_dict()
    grid_f, grid_t = patch_grid(128, cfg.input_tdim, cfg.fstride, cfg.tstride)
    assert set(state) == set(original_state_dict(embed_dim=8, depth=cfg.depth))
    assert state["freq_new_pos_embed"].shape == (1, cfg.embed_dim, grid_f, 1)
    assert state["time_new_pos_embed"].shape == (1, cfg.embed_dim, 1, grid_t)
    assert state["head.1.weight"].shape == (cfg.n_classes, cfg.embed_dim)
    assert cfg.file_name == cfg.url.rsplit("/", 1)[-1]


def test_aliases_name_registered_architectures():
    assert all(resolve_arch(alias) is ARCHS[target] for alias, target in ARCH_ALIASES.items())
    assert len({cfg.file_name for cfg in ARCHS.values()}) == len(ARCHS)  # no two releases share a cache file


def test_full_size_architecture_has_the_published_parameter_count():
    with torch.device("meta"):
        model = get_model(pretrained=False)  # PaSST-S: 86.2M parameters
    assert sum(p.numel() for p in model.parameters()) == 86_153_758


def test_cut_depth_drops_blocks():
    model = tiny(depth=6)
    first, last = model.blocks[0], model.blocks[-1]
    cut_blocks(model, 2)
    assert len(model.blocks) == 4 and model.blocks[0] is first and model.blocks[-1] is last
    model = cut_blocks(tiny(depth=7), -2)
    assert len(model.blocks) == 5  # first, blocks 1, 3, 5 of the middle, last
    with pytest.raises(ValueError, match="cut_depth"):
        cut_blocks(tiny(depth=3), 2)
    assert len(tiny(depth=4, cut_depth=1).blocks) == 3


def test_pretrained_rejects_size_overrides():
    with pytest.raises(ValueError, match="cut_depth"):
        get_model(pretrained=True, depth=2)


def test_ensemble_averages_member_logits():
    a, b = tiny(n_classes=5).eval(), tiny(n_classes=5, fstride=16, tstride=16).eval()
    ensemble = PaSSTEnsemble([a, b]).eval()
    x = torch.randn(2, 1, 128, 500)
    with torch.no_grad():
        logits, emb = ensemble(x)
        torch.testing.assert_close(logits, (a(x)[0] + b(x)[0]) / 2)
    assert emb.shape == (2, 128)


def test_get_ensemble_model_takes_triples_and_checkpoint_dicts(tmp_path):
    member = tiny(n_classes=5)
    torch.save(member.state_dict(), tmp_path / "member.pt")
    ens = get_ensemble_model(
        [("passt_s_swa_p16_128_ap476", 16, 16), {"arch": "passt_s_swa_p16_128_ap476", "checkpoint": tmp_path / "member.pt"}],
        **TINY, n_classes=5)
    assert len(ens.models) == 2 and ens.models[0].stride == (16, 16)
    torch.testing.assert_close(ens.models[1].head[1].weight, member.head[1].weight)


def test_no_weight_decay_names_exist():
    model = tiny()
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)


def test_unused_distillation_head_is_frozen():
    model = tiny()
    assert not any(p.requires_grad for p in model.head_dist.parameters())
    logits, _ = model.train()(torch.randn(1, 1, 128, 300))
    logits.sum().backward()
    assert model.head[1].weight.grad is not None and model.head_dist.weight.grad is None

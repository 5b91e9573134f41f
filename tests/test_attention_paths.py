"""The attention path comes from the measured table (models/attention_paths.json), not a fixed rule."""

from __future__ import annotations

import json

import pytest
import torch

import models.attention_paths as attention_paths
from models.attention_paths import ATTENTION_TABLE_PATH, fused_attention_is_faster
from models.passt import PaSSTAttention

TABLE = {"cpu": {
    "float32": {"machine": "test", "measured_by": "test", "rows": [
        {"tokens": 50, "inference": {"fused_ms": 2.0, "explicit_ms": 1.0},
         "training": {"fused_ms": 1.0, "explicit_ms": 2.0}},
        {"tokens": 1000, "inference": {"fused_ms": 1.0, "explicit_ms": 2.0},
         "training": {"fused_ms": 1.0, "explicit_ms": 2.0}}]},
    "bfloat16": {"machine": "test", "measured_by": "test", "rows": [
        {"tokens": None, "training": {"fused_ms": 170.0, "explicit_ms": 144.0}}]},
    "float16": {"machine": "test", "measured_by": "test", "same_as": "bfloat16"}}}


@pytest.fixture
def fake_table(monkeypatch):
    monkeypatch.setattr(attention_paths, "_attention_table", lambda: TABLE)
    fused_attention_is_faster.cache_clear()
    yield
    fused_attention_is_faster.cache_clear()


def test_the_nearest_measured_length_decides(fake_table):
    assert not fused_attention_is_faster("cpu", torch.float32, 14, training=False)  # nearest: 50
    assert not fused_attention_is_faster("cpu", torch.float32, 200, training=False)  # 200/50 < 1000/200
    assert fused_attention_is_faster("cpu", torch.float32, 250, training=False)
    assert fused_attention_is_faster("cpu", torch.float32, 50, training=True)  # training has its own timing


def test_other_precisions_and_devices(fake_table):
    # measured once, for every length; inference follows the training timing when only that exists
    assert not fused_attention_is_faster("cpu", torch.bfloat16, 1190, training=False)
    assert not fused_attention_is_faster("cpu", torch.float16, 20, training=True)
    assert fused_attention_is_faster("cuda", torch.bfloat16, 1190, training=True)  # unmeasured: fused


def test_the_layer_follows_the_table_and_both_paths_agree(fake_table):
    torch.manual_seed(0)
    layer = PaSSTAttention(32, num_heads=2, qkv_bias=True).eval()
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        explicit = layer(x)
        assert layer.fused_attn is False
        fused = layer(torch.cat([x, torch.zeros(2, 950, 32)], 1))[:, :50]  # 1000 tokens: fused
        assert layer.fused_attn is True
        layer.fused_attn = True
        torch.testing.assert_close(super(PaSSTAttention, layer).forward(x), explicit, atol=1e-5, rtol=0)
    assert fused.shape == explicit.shape


def test_the_recorded_table_names_its_machines():
    table = json.loads(ATTENTION_TABLE_PATH.read_text())
    assert "float32" in table["cpu"] and "bfloat16" in table["cpu"]
    for device in table.values():
        for entry in device.values():
            assert entry["machine"] and entry["measured_by"]
            rows = entry.get("rows") or device[entry["same_as"]]["rows"]
            for row in rows:
                assert row["training"]["fused_ms"] > 0 and row["training"]["explicit_ms"] > 0

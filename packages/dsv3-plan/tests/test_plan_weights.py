"""Per-family weight bytes against closed forms: parameter counts from `dsv3_config` and V3 shapes by hand."""

from __future__ import annotations

import math

import pytest

from dsv3_config import LayerKind, count_params, preset
from dsv3_config.param_count import attention_linear_shapes, attention_params, swiglu_linear_shapes, swiglu_params
from dsv3_plan import deployment, dsv3_layout, make_plan
from dsv3_plan.devices import device
from dsv3_plan.weights import matrix_on_rank

PRESET_NAMES = ("tiny", "medium", "deepseek-v3", "deepseek-v2-lite", "kimi-k2", "moonlight")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_attention_shapes_sum_to_attention_params(name):
    cfg = preset(name)
    matrices = sum(o * i for o, i in attention_linear_shapes(cfg).values())
    norms = (cfg.q_lora_rank or 0) + cfg.kv_lora_rank  # q_a_layernorm, kv_a_layernorm
    assert matrices + norms == attention_params(cfg)  # exact: integer counts
    assert sum(o * i for o, i in swiglu_linear_shapes(7, 5).values()) == swiglu_params(7, 5)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_unsharded_bf16_weights_are_two_bytes_per_counted_parameter(name):
    """At tp=1 the dsv3 BF16 layout holds every parameter `count_params` counts, at 2 bytes, except the
    fp32 `e_score_correction_bias` (2 more bytes each). Exact."""
    cfg = preset(name)
    layout = dsv3_layout("bf16")
    plan = make_plan(cfg, deployment(cfg, layout, tp=1, seq_len=8), layout, device("h200"))
    moe_layers = cfg.layer_kinds.count(LayerKind.MOE)
    bias = cfg.n_routed_experts * moe_layers if cfg.topk_method == "noaux_tc" else 0
    assert plan.weight_bytes == 2 * count_params(cfg).total + 2 * bias


def test_fp8_slice_carries_one_scale_per_block_it_touches():
    """A 32-row slice of a 2048 x 7168 expert projection (V3 at moe_tp 64): 32 x 7168 bytes + 1 x 56 scales."""
    params, nbytes = matrix_on_rank((2048, 7168), 0, 64, "fp8", (128, 128))
    assert params == 32 * 7168
    assert nbytes == 32 * 7168 + 4 * 1 * 56
    assert matrix_on_rank((129280, 7168), 0, 64, "bf16", (128, 128)) == (2020 * 7168, 2 * 2020 * 7168)
    assert matrix_on_rank((256, 7168), None, 64, "fp32", (1, 1))[1] == 256 * 7168 * 4


def test_v3_fp8_checkpoint_bytes_by_hand():
    """dsv3 FP8 at tp=1: every checkpoint-FP8 linear at 1 byte + ceil-blocked fp32 scales, the rest BF16
    (router weight BF16, its bias fp32). Hand-written V3 shapes; exact."""
    cfg = preset("deepseek-v3")
    h, blocks = 7168, lambda o, i: math.ceil(o / 128) * math.ceil(i / 128)
    lin = lambda o, i: o * i + 4 * blocks(o, i)  # noqa: E731
    attention = lin(1536, h) + lin(24576, 1536) + lin(576, h) + lin(32768, 512) + lin(h, 16384)
    expert = 2 * lin(2048, h) + lin(h, 2048)
    dense = 2 * lin(18432, h) + lin(h, 18432)
    fp8 = 61 * attention + 58 * 257 * expert + 3 * dense  # 256 routed + 1 shared expert per MoE layer
    bf16 = 2 * (2 * 129280 * h + 58 * 256 * h + 61 * (2 * h + 1536 + 512) + h) + 4 * 58 * 256
    layout = dsv3_layout("fp8")
    plan = make_plan(cfg, deployment(cfg, layout, tp=1, seq_len=8, weight_dtype="fp8"), layout, device("h200"))
    assert plan.weight_bytes == fp8 + bf16

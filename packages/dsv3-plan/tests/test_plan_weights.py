"""Per-family weight bytes against closed forms: parameter counts from `dsv3_config` and V3 shapes by hand."""

from __future__ import annotations

import pytest

from dsv3_config import LayerKind, count_params, preset
from dsv3_plan import deployment, dsv3_layout, make_plan
from dsv3_plan.devices import device
from dsv3_plan.weights import matrix_on_rank

PRESET_NAMES = ("tiny", "medium", "deepseek-v3", "deepseek-v2-lite", "kimi-k2", "moonlight")


def test_attention_biases_are_counted_with_the_norms():
    """tiny with `attention_bias` at tp=1, BF16, by hand: per layer the two layer norms (2 x 64), the latent
    norms (48 + 32) and transformers' three biases (q_a_proj 48, kv_a_proj_with_mqa 40, o_proj 64), times
    3 layers; the final norm (64); the fp32 correction bias of 16 experts in each of the 2 MoE layers."""
    cfg = preset("tiny").replace(attention_bias=True)
    layout = dsv3_layout("bf16")
    plan = make_plan(cfg, deployment(cfg, layout, tp=1, seq_len=8), layout, device("h200"))
    vectors = 3 * (2 * 64 + 48 + 32 + 48 + 40 + 64) + 64
    norms = plan.family("norms_and_biases")
    assert norms.params_per_rank == vectors + 2 * 16
    assert norms.bytes_per_rank == 2 * vectors + 4 * 2 * 16


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
    """dsv3 FP8 (`--weights fp8`) at tp=1: every linear the adapter holds FP8 at 1 byte + one fp32 scale per
    128 x 128 block, except kv_a_proj_with_mqa (576 rows: 64-row device blocks, gcd(128, 576), 9 x 56 scales);
    kv_b_proj, embeddings, lm_head, router weight BF16, its bias fp32. Hand-written V3 shapes; exact."""
    cfg = preset("deepseek-v3")
    h = 7168
    lin = lambda o, i: o * i + 4 * (o // 128) * (i // 128)  # noqa: E731
    attention = lin(1536, h) + lin(24576, 1536) + (576 * h + 4 * 9 * 56) + lin(h, 16384)
    expert = 2 * lin(2048, h) + lin(h, 2048)
    dense = 2 * lin(18432, h) + lin(h, 18432)
    fp8 = 61 * attention + 58 * 257 * expert + 3 * dense  # 256 routed + 1 shared expert per MoE layer
    kv_b = 32768 * 512
    bf16 = 2 * (2 * 129280 * h + 58 * 256 * h + 61 * (2 * h + 1536 + 512 + kv_b) + h) + 4 * 58 * 256
    layout = dsv3_layout("fp8")
    plan = make_plan(cfg, deployment(cfg, layout, tp=1, seq_len=8, weight_dtype="fp8"), layout, device("h200"))
    assert plan.weight_bytes == fp8 + bf16

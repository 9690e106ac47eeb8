"""Which other linears weight format `fp8` holds FP8 and their device blocks (`dsv3_config.inventory.fp8_linears`),
by hand: every block-quantized linear of a decoder layer but kv_b_proj (and the latent projections under
attention_bias), each block the checkpoint block cut down to gcd with the rank's slice."""

from __future__ import annotations

import pytest

from dsv3_config import LayerKind, preset
from dsv3_config.inventory import decoder_layer_tensors, model_tensors
from dsv3_config.inventory.fp8_linears import fp8_linear_block, fp8_linear_on_device, fp8_linear_scales_per_rank

ATTENTION = ["self_attn.q_a_proj.weight", "self_attn.q_b_proj.weight", "self_attn.kv_a_proj_with_mqa.weight"]
ATTENTION += ["self_attn.o_proj.weight"]
SWIGLU = ["gate_proj.weight", "up_proj.weight", "down_proj.weight"]


def _fp8(cfg, kind):  # type: ignore[no-untyped-def]
    return [decl.name for decl in decoder_layer_tensors(cfg, kind) if fp8_linear_on_device(cfg, decl)]


def test_fp8_linears_of_v3_by_hand() -> None:
    cfg = preset("deepseek-v3")
    assert _fp8(cfg, LayerKind.DENSE) == ATTENTION + [f"mlp.{name}" for name in SWIGLU]
    assert _fp8(cfg, LayerKind.MOE) == ATTENTION + [f"mlp.shared_experts.{name}" for name in SWIGLU]
    held = [name for name, decl in model_tensors(cfg).items() if fp8_linear_on_device(cfg, decl)]
    assert not [name for name in held if "kv_b_proj" in name or ".layers.61." in name or "experts.0." in name]


def test_no_q_lora_and_attention_bias() -> None:
    """V2-Lite: q_proj instead of q_a/q_b. With attention_bias the latent projections stay dense (NxD's quantized
    row-parallel layer would add their bias on every rank before the latent all-reduce)."""
    lite = preset("deepseek-v2-lite").replace(
        quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]}
    )
    assert _fp8(lite, LayerKind.DENSE)[:3] == [
        "self_attn.q_proj.weight",
        "self_attn.kv_a_proj_with_mqa.weight",
        ATTENTION[3],
    ]
    biased = preset("tiny").replace(attention_bias=True)
    assert _fp8(biased, LayerKind.DENSE) == ["self_attn.q_b_proj.weight", ATTENTION[3], *[f"mlp.{n}" for n in SWIGLU]]


# (shape [out, in], split dim, tp, device block, scales per rank): V3 at tp 64, 128x128 checkpoint blocks
V3 = [
    ((24576, 1536), 0, 64, (128, 128), 3 * 12),  # q_b_proj: 384 rows per rank
    ((7168, 16384), 1, 64, (128, 128), 56 * 2),  # o_proj: 256 columns per rank
    ((576, 7168), 1, 64, (64, 16), 9 * 7),  # kv_a_proj_with_mqa: 112 columns per rank, 576 = 4.5 blocks
    ((18432, 7168), 0, 64, (32, 128), 9 * 56),  # dense gate_proj: 288 rows per rank
    ((2048, 7168), 0, 64, (32, 128), 1 * 56),  # shared expert gate_proj: 32 rows per rank
    ((1536, 7168), None, 64, (128, 128), 12 * 56),  # whole on every rank
]


@pytest.mark.parametrize(("shape", "split", "tp", "block", "scales"), V3)
def test_v3_device_blocks_by_hand(shape, split, tp, block, scales) -> None:  # type: ignore[no-untyped-def]
    cfg = preset("deepseek-v3")
    assert fp8_linear_block(cfg, shape, split, tp) == block
    assert fp8_linear_scales_per_rank(cfg, shape, split, tp) == scales


def test_refusals_name_the_cause() -> None:
    with pytest.raises(ValueError, match="FP8 quantization_config"):
        fp8_linear_block(preset("tiny").replace(quantization_config=None), (64, 64), 0, 1)
    with pytest.raises(ValueError, match=r"shape \(96, 48\): dim 0 is not divisible by tp=5"):
        fp8_linear_block(preset("tiny"), (96, 48), 0, 5)

"""FP8 routed experts in NxD's on-device layout (`nxdi_checkpoint.fp8_experts`, NxD-free), against closed
forms and dsv3-weights' own dequantization of the checkpoint.

1. The rescaling into Neuron's e4m3 range, over every finite `float8_e4m3fn` value: halving is exact for
   |q| >= 2^-5, moves smaller ones by at most 2^-9 in q units (half the subnormal step 2^-9 of the halved
   value, doubled back), and the largest result is 224 <= 240.
2. A converted stack dequantized the way NxD's blockwise layers do it (`q * scale` per device block, each scale
   repeated over its block) equals the checkpoint's HF matrices dequantized by dsv3-weights (the CPU loader's
   `dequantize_fp8_blocks`), transposed and stacked as NxD stores them, within the bound of 1. Cases: tiny (32x32
   blocks, a partial block along I = 48) at moe_tp 1, 2 and 4 (24 and 12 columns per rank: device blocks of 8 and
   4), and V3's expert width and blocks (I 2048, 128x128; hidden cut to 1024, 2 experts) at moe_tp 64 (128 x 32
   blocks).
"""

from __future__ import annotations

import pytest
import torch

from dsv3_config import ModelConfig, preset
from dsv3_config.inventory.fp8_experts import fp8_expert_grid, fp8_expert_scales_per_rank
from dsv3_model.nxdi_checkpoint.fp8_experts import FP8, rescale_for_neuron
from dsv3_model.nxdi_checkpoint.neuron_tensors import SCALE_SUFFIX, Kind, NeuronTarget, neuron_tensors
from dsv3_model.nxdi_checkpoint.state_dict import convert_tensor
from dsv3_weights.fp8 import dequantize_fp8_blocks, quantize_fp8_blocks


def test_rescale_is_exact_above_the_subnormals_and_in_range() -> None:
    q = torch.arange(256, dtype=torch.uint8).view(FP8).float()
    q = q[torch.isfinite(q)]
    back = rescale_for_neuron(q).float() * 2
    normal = q.abs() >= 2**-5
    assert torch.equal(back[normal], q[normal])
    assert float((back - q).abs().max()) <= 2**-9
    assert float(rescale_for_neuron(q).float().abs().max()) == 224.0


def _dequantized_nxd(weight_EIO: torch.Tensor, scale_EIO: torch.Tensor) -> torch.Tensor:
    """NxD's blockwise dequantization, written out: each scale repeated over its (in, out) block."""
    _, n_in, n_out = weight_EIO.shape
    b_in, b_out = n_in // scale_EIO.shape[1], n_out // scale_EIO.shape[2]
    expanded = scale_EIO.repeat_interleave(b_in, dim=1).repeat_interleave(b_out, dim=2)
    return weight_EIO.float() * expanded


CASES = [("tiny", preset("tiny"), tp) for tp in (1, 2, 4)]
V3_CUT = preset("deepseek-v3").replace(
    n_routed_experts=2,
    n_group=1,
    topk_group=1,
    num_experts_per_tok=1,
    num_hidden_layers=2,
    first_k_dense_replace=1,
    hidden_size=1024,  # V3's I = 2048 and 128x128 blocks (what fixes the grid at tp 64), a narrower hidden
)
CASES.append(("v3-2-experts", V3_CUT, 64))


@pytest.mark.parametrize(("name", "cfg", "moe_tp"), CASES, ids=[f"{c[0]}-tp{c[2]}" for c in CASES])
def test_converted_stacks_dequantize_to_the_checkpoint(name: str, cfg: ModelConfig, moe_tp: int) -> None:
    assert cfg.quantization_config is not None
    block = cfg.quantization_config.weight_block_size
    grid = fp8_expert_grid(cfg, moe_tp)
    layer_1 = neuron_tensors(cfg, NeuronTarget(torch.bfloat16, 1, 1, 1, grid))
    tensors = [t for t in layer_1 if t.name.startswith("layers.1.")]
    by_name = {t.name: t for t in tensors}
    stacks = [t for t in tensors if t.kind == Kind.STACKED]
    generator = torch.Generator().manual_seed(3)
    sources: dict[str, torch.Tensor] = {}
    for stack in stacks:
        assert stack.stack is not None
        for key in stack.stack.all_source_keys():
            shape = (stack.shape[2] // len(stack.stack.source_keys(0)), stack.shape[1])  # HF [out, in]
            sources[key], sources[key + SCALE_SUFFIX] = quantize_fp8_blocks(
                torch.randn(shape, generator=generator), block
            )

    def read(key: str, slices: tuple[slice, ...], *, raw: bool = False) -> torch.Tensor:
        assert raw, "FP8 stacks are built from the stored bits only"
        return sources[key][slices]

    for stack in stacks:
        assert stack.stack is not None
        assert stack.dtype == FP8
        scale = by_name[stack.name.removesuffix("weight") + "scale"]
        whole = tuple((0, size) for size in stack.shape)
        weight_EIO = convert_tensor(stack, whole, read)
        scale_EIO = convert_tensor(scale, tuple((0, size) for size in scale.shape), read)
        assert weight_EIO.dtype == FP8
        assert scale_EIO.dtype == torch.float32
        expected_EIO = torch.stack(
            [
                torch.cat(
                    [
                        dequantize_fp8_blocks(sources[key], sources[key + SCALE_SUFFIX], block, torch.float32)
                        for key in stack.stack.source_keys(e)
                    ]
                ).T
                for e in range(cfg.n_routed_experts)
            ]
        )
        # 2^-9 s (s the checkpoint scale; the device one is 2 s), plus fp32 rounding of the two products
        bound = 2**-9 * float(scale_EIO.max()) / 2 * (1 + 2**-20)
        torch.testing.assert_close(_dequantized_nxd(weight_EIO, scale_EIO), expected_EIO, atol=bound, rtol=0)


def test_v3_grid_at_tp64_holds_the_scales_of_the_128_grid_cut_by_rank() -> None:
    cfg = preset("deepseek-v3")
    grid = fp8_expert_grid(cfg, 64)
    assert (grid.gate_up, grid.down) == ((128, 32), (32, 128))
    # per expert per rank: gate and up [32, 7168] -> 1 x 56 blocks each, down [7168, 32] -> 56 x 1
    assert fp8_expert_scales_per_rank(cfg, 64) == 3 * 56

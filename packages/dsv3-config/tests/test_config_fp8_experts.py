"""The FP8 routed-expert grid on device (`dsv3_config.inventory.fp8_experts`), by hand: each block is the
checkpoint block cut down to divide the per-rank slice, and the scale count per rank follows from it."""

from __future__ import annotations

import pytest

from dsv3_config import preset
from dsv3_config.inventory.fp8_experts import fp8_expert_grid, fp8_expert_scales_per_rank
from dsv3_config.inventory.placements import DEVICE_WEIGHT_FORMATS, default_weight_format

# tiny: hidden 64, moe_intermediate 48, 32x32 checkpoint blocks. (moe_tp, gate_up (in, out), down (in, out),
# scales per expert per rank = gate_up (64/in x 2*(48/tp)/out) + down ((48/tp)/in x 64/out)).
TINY = [
    (1, (32, 16), (16, 32), 2 * 6 + 3 * 2),  # 48 columns: gcd(32, 48) = 16
    (2, (32, 8), (8, 32), 2 * 6 + 3 * 2),  # 24 per rank: gcd 8
    (4, (32, 4), (4, 32), 2 * 6 + 3 * 2),  # 12 per rank: gcd 4
    (16, (32, 1), (1, 32), 2 * 6 + 3 * 2),  # 3 per rank: gcd 1
]


@pytest.mark.parametrize(("moe_tp", "gate_up", "down", "scales"), TINY)
def test_tiny_grid_by_hand(moe_tp: int, gate_up: tuple[int, int], down: tuple[int, int], scales: int) -> None:
    grid = fp8_expert_grid(preset("tiny"), moe_tp)
    assert (grid.checkpoint_block, grid.gate_up, grid.down) == ((32, 32), gate_up, down)
    assert fp8_expert_scales_per_rank(preset("tiny"), moe_tp) == scales
    assert grid.scale_shape("gate_up", (16, 64, 96)) == (16, 64 // gate_up[0], 96 // gate_up[1])


def test_v3_grid_keeps_128_blocks_where_the_slice_allows() -> None:
    """V3: I = 2048. At moe_tp 16 each rank holds 128 columns (full blocks); at 64, 32 (one partial block)."""
    cfg = preset("deepseek-v3")
    assert (fp8_expert_grid(cfg, 16).gate_up, fp8_expert_grid(cfg, 16).down) == ((128, 128), (128, 128))
    assert (fp8_expert_grid(cfg, 64).gate_up, fp8_expert_grid(cfg, 64).down) == ((128, 32), (32, 128))
    assert fp8_expert_scales_per_rank(cfg, 16) == 56 * 1 * 2 + 1 * 56  # 3 x 56, as at 64
    assert fp8_expert_scales_per_rank(cfg, 64) == 3 * 56


def test_refusals_name_the_cause() -> None:
    with pytest.raises(ValueError, match="FP8 quantization_config"):
        fp8_expert_grid(preset("tiny").replace(quantization_config=None), 1)
    with pytest.raises(ValueError, match="moe_intermediate_size=48 is not divisible by moe_tp=5"):
        fp8_expert_grid(preset("tiny"), 5)


def test_fp8_checkpoints_default_to_fp8_experts() -> None:
    assert DEVICE_WEIGHT_FORMATS == ("bf16", "fp8-experts", "fp8")  # fp8: by option only
    assert default_weight_format(preset("deepseek-r1")) == "fp8-experts"
    assert default_weight_format(preset("kimi-k2")) == "fp8-experts"
    assert default_weight_format(preset("deepseek-v2-lite")) == "bf16"

"""The FP8 routed-expert grid on device: the block sizes NxD's quantized expert layers get, so that every
rank's slice of the checkpoint's FP8 blocks is carried exactly, and the fp32 scales that implies per rank.

NxD stores the stacks as `[E, in, out]` (`gate_up_proj` [E, H, 2I] column-parallel over its last dim, gate and
up each split; `down_proj` [E, I, H] row-parallel over dim 1) and a blockwise layer holds one fp32 scale per
`(b_in, b_out)` block of each rank's slice, the block dividing the slice (NxD
`quantization/quantization_layers.py:268-291`, `dequantize.py:43-75`). The checkpoint's blocks are
`weight_block_size = (rows, cols)` of each HF `[out, in]` matrix (128x128 in V3), with partial edge blocks.
A device block of `gcd(checkpoint block, rank slice)` along each dim lies inside one checkpoint block and inside
one rank's slice, so repeating each checkpoint scale over the device blocks it covers is exact, for any tp and
any edge block. V3 at moe_tp 64: I / 64 = 32 columns per rank, so the grid is 128 x 32 along (in, out) of
gate_up and 32 x 128 of down: the same scale count per rank as the 128x128 grid cut by rank (one partial
block per rank), no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from dsv3_config.model_config import ModelConfig

Block = tuple[int, int]  # (in, out) elements per scale in NxD's [E, in, out] stack


@dataclass(frozen=True)
class Fp8ExpertGrid:
    """Device block sizes of both stacks for one moe_tp, and the checkpoint block they refine."""

    checkpoint_block: Block  # (rows, cols) of each HF [out, in] matrix: `weight_block_size`
    gate_up: Block  # (in, out) of [E, H, 2I]
    down: Block  # (in, out) of [E, I, H]

    def scale_shape(self, stack: str, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The fp32 scale grid of a whole `[E, in, out]` stack (`stack` is `gate_up` or `down`)."""
        b_in, b_out = self.gate_up if stack == "gate_up" else self.down
        experts, n_in, n_out = shape
        return (experts, n_in // b_in, n_out // b_out)


def fp8_expert_grid(cfg: ModelConfig, moe_tp: int) -> Fp8ExpertGrid:
    """The grid for `cfg`'s FP8 checkpoint with each expert's intermediate dim split over `moe_tp` ranks."""
    if cfg.quantization_config is None:
        raise ValueError("FP8 experts need a checkpoint config with an FP8 quantization_config")
    hidden, inter = cfg.hidden_size, cfg.moe_intermediate_size
    if inter % moe_tp:
        raise ValueError(f"moe_intermediate_size={inter} is not divisible by moe_tp={moe_tp}")
    rows, cols = cfg.quantization_config.weight_block_size
    per_rank = inter // moe_tp
    return Fp8ExpertGrid(
        checkpoint_block=(rows, cols),
        gate_up=(gcd(cols, hidden), gcd(rows, per_rank)),
        down=(gcd(cols, per_rank), gcd(rows, hidden)),
    )


def fp8_expert_scales_per_rank(cfg: ModelConfig, moe_tp: int) -> int:
    """fp32 scales one rank holds per routed expert (gate, up and down together)."""
    grid = fp8_expert_grid(cfg, moe_tp)
    hidden, per_rank = cfg.hidden_size, cfg.moe_intermediate_size // moe_tp
    gate_up = (hidden // grid.gate_up[0]) * (2 * per_rank // grid.gate_up[1])
    down = (per_rank // grid.down[0]) * (hidden // grid.down[1])
    return gate_up + down

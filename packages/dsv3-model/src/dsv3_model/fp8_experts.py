"""`Fp8GroupedExperts`: dsv3-moe's routed experts with their weights kept FP8 e4m3 plus block scales,
each active expert dequantized when a token reaches it (`--weights fp8-resident`).

Layout: `gate_up_proj` float8_e4m3fn [E, 2I, H] and `down_proj` [E, H, I], as `GroupedExperts` stacks
them, with `gate_up_proj_scale_inv` fp32 [E, 2 Gi, Gh] (gate's grid rows, then up's: each half has its own
grid, also when I is not a multiple of the block) and `down_proj_scale_inv` [E, Gh', Gi'].

Computation: eagerly, dsv3-moe's active-expert loop (`expert_loop`) over weights dequantized per active
expert with `dequantize_fp8_blocks` (the loader's function), so the result equals a dequantized model
running that loop bit for bit and idle experts are never touched. Under a compiler or autograd, the
static form (`static_swiglu`) over the experts dequantized traceably (same values): in a decode step only
the chosen experts, gathered in FP8 first; with more pairs than experts, every expert.

Shape legend: T tokens, H hidden, K experts per token, E experts, I intermediate, G scale grid sizes.
"""

from __future__ import annotations

import torch

from dsv3_model.fp8_module import Fp8Module
from dsv3_moe import ExpertOperands, static_swiglu
from dsv3_moe.eager_choice import expert_loop
from dsv3_weights.fp8 import (
    dequantize_fp8_blocks,
    dequantize_rows_traceable_f32,
    dequantize_traceable_f32,
    scale_grid,
    scale_rows,
)


class Fp8GroupedExperts(Fp8Module):
    """`experts(hidden_TH, topk_idx_TK, topk_weight_TK) -> out_TH`, all experts on this device."""

    gate_up_proj: torch.Tensor
    gate_up_proj_scale_inv: torch.Tensor
    down_proj: torch.Tensor
    down_proj_scale_inv: torch.Tensor

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, *, block: tuple[int, int]) -> None:
        super().__init__(block)
        self.num_experts, self.intermediate_size = num_experts, intermediate_size
        half_grid = scale_grid((intermediate_size, hidden_size), block)
        down_grid = scale_grid((hidden_size, intermediate_size), block)
        gate_up_shape = (num_experts, 2 * intermediate_size, hidden_size)
        self.register_fp8("gate_up_proj", gate_up_shape, (num_experts, 2 * half_grid[0], half_grid[1]))
        self.register_fp8("down_proj", (num_experts, hidden_size, intermediate_size), (num_experts, *down_grid))

    def forward(self, hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, topk_weight_TK: torch.Tensor) -> torch.Tensor:
        weight_TK = topk_weight_TK.to(torch.float32)
        if hidden_TH.shape[0] == 0:
            return hidden_TH.new_zeros(hidden_TH.shape)
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and hidden_TH.requires_grad):
            out_TH = static_swiglu(self.static_operands(hidden_TH.float(), topk_idx_TK, weight_TK))
        else:
            out_TH = expert_loop(hidden_TH, topk_idx_TK, weight_TK, self.num_experts, self.expert_weights)
        return out_TH.to(hidden_TH.dtype)

    def expert_weights(self, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert `expert`'s `(gate_up [2I, H], down [H, I])` in the model dtype, dequantized for this call."""
        dtype, inter = self.products_dtype, self.intermediate_size
        rows = self.gate_up_proj_scale_inv.shape[1] // 2
        gate_up_XH = torch.empty(self.gate_up_proj.shape[1:], dtype=dtype)
        for half in (0, 1):
            dequantize_fp8_blocks(
                self.gate_up_proj[expert, half * inter : (half + 1) * inter],
                self.gate_up_proj_scale_inv[expert, half * rows : (half + 1) * rows],
                self.block,
                dtype,
                out=gate_up_XH[half * inter : (half + 1) * inter],
            )
        down_HI = dequantize_fp8_blocks(self.down_proj[expert], self.down_proj_scale_inv[expert], self.block, dtype)
        return gate_up_XH, down_HI

    def static_operands(
        self, hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, weight_TK: torch.Tensor
    ) -> ExpertOperands:
        """`static_swiglu`'s operands. Few pairs (T*K <= E, decode): only the pairs' experts, gathered in FP8
        and then dequantized, with local ids 0..T*K-1, so a compiled step reads each chosen expert's FP8
        bytes once (`dsv3_model.row_products`); more pairs: every expert, dequantized. Weights are the model
        dtype's values held in fp32, products in fp32 (`Fp8BlockLinear.compiled_product` says why)."""
        num_tokens, top_k = topk_idx_TK.shape
        if num_tokens * top_k > self.num_experts:
            return ExpertOperands(hidden_TH, topk_idx_TK, weight_TK, *self.dequantized_stacks())
        pairs_TK = torch.arange(num_tokens * top_k, device=topk_idx_TK.device).view(num_tokens, top_k)
        return ExpertOperands(hidden_TH, pairs_TK, weight_TK, *self.dequantized_stacks(topk_idx_TK.reshape(-1)))

    def dequantized_stacks(self, experts_P: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(gate_up [P, 2I, H], down [P, H, I])` of the experts `experts_P` (all: P = E), traceably (the
        compiled and autograd form), in fp32 holding the model dtype's values. The `[gate | up]` rows'
        scales are expanded per row before they are joined, so no dequantized weight is concatenated (a
        copy a compiler cannot fuse away)."""
        gate_up_PXH, gate_up_scale = self.gate_up_proj, self.gate_up_proj_scale_inv
        down_PHI, down_scale = self.down_proj, self.down_proj_scale_inv
        if experts_P is not None:
            gate_up_PXH, gate_up_scale = gate_up_PXH[experts_P], gate_up_scale[experts_P]
            down_PHI, down_scale = down_PHI[experts_P], down_scale[experts_P]
        dtype, inter, (block_rows, block_cols) = self.products_dtype, self.intermediate_size, self.block
        rows = gate_up_scale.shape[1] // 2
        halves = [scale_rows(gate_up_scale[:, h * rows : (h + 1) * rows], block_rows, inter) for h in (0, 1)]
        scale_PXGc = torch.cat(halves, dim=1)
        gate_up = dequantize_rows_traceable_f32(gate_up_PXH, scale_PXGc, block_cols, dtype)
        return gate_up, dequantize_traceable_f32(down_PHI, down_scale, self.block, dtype)

    def extra_repr(self) -> str:
        return (
            f"experts 0..{self.num_experts - 1} FP8, gate_up_proj {tuple(self.gate_up_proj.shape)}, "
            f"down_proj {tuple(self.down_proj.shape)}, blocks {self.block}, products in {self.products_dtype}"
        )

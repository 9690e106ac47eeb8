"""`Fp8GroupedExperts`: dsv3-moe's routed experts with their weights kept FP8 e4m3 plus block scales,
each active expert dequantized when a token reaches it (`--weights fp8-resident`).

Layout: `gate_up_proj` float8_e4m3fn [E, 2I, H] and `down_proj` [E, H, I], as `GroupedExperts` stacks
them, with `gate_up_proj_scale_inv` fp32 [E, 2 Gi, Gh] (gate's grid rows, then up's: each half has its own
grid, also when I is not a multiple of the block) and `down_proj_scale_inv` [E, Gh', Gi'].

Computation: eagerly, dsv3-moe's active-expert loop (`expert_loop`) over weights dequantized per active
expert with `dequantize_fp8_blocks` (the loader's function), so the result equals a dequantized model
running that loop bit for bit and idle experts are never touched. Under a compiler or autograd, the
static form (`static_swiglu`) over every local expert dequantized traceably (same values; no memory
saving while it runs, only at rest).

Shape legend: T tokens, H hidden, K experts per token, E experts, I intermediate, G scale grid sizes.
"""

from __future__ import annotations

import torch

from dsv3_model.fp8_module import Fp8Module
from dsv3_moe import ExpertOperands, static_swiglu
from dsv3_moe.eager_choice import expert_loop
from dsv3_weights.fp8 import dequantize_fp8_blocks, dequantize_traceable, scale_grid


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
            gate_up_EXH, down_EHI = self.dequantized_stacks()
            out_TH = static_swiglu(ExpertOperands(hidden_TH, topk_idx_TK, weight_TK, gate_up_EXH, down_EHI))
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

    def dequantized_stacks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert's `(gate_up [E, 2I, H], down [E, H, I])`, traceably (the compiled and autograd form)."""
        dtype, inter = self.products_dtype, self.intermediate_size
        rows = self.gate_up_proj_scale_inv.shape[1] // 2
        halves = [
            dequantize_traceable(
                self.gate_up_proj[:, h * inter : (h + 1) * inter],
                self.gate_up_proj_scale_inv[:, h * rows : (h + 1) * rows],
                self.block,
                dtype,
            )
            for h in (0, 1)
        ]
        down = dequantize_traceable(self.down_proj, self.down_proj_scale_inv, self.block, dtype)
        return torch.cat(halves, dim=1), down

    def extra_repr(self) -> str:
        return (
            f"experts 0..{self.num_experts - 1} FP8, gate_up_proj {tuple(self.gate_up_proj.shape)}, "
            f"down_proj {tuple(self.down_proj.shape)}, blocks {self.block}, products in {self.products_dtype}"
        )

"""`GroupedExperts`: the routed experts as two stacked tensors and a grouped computation.

Parameters (transformers 5.x uses the same in-memory layout and names):
`gate_up_proj` [E_local, 2 * I_local, H] (gate rows, then up rows) and `down_proj` [E_local, H, I_local].
HF checkpoints store one `experts.{e}.{gate,up,down}_proj.weight` per expert; `dsv3_moe.stacking`
declares how they stack.

The computation (`grouped_swiglu`) sorts the token-expert pairs by expert, runs one SwiGLU per expert that
received tokens (a Python loop over the *active* experts only: `torch._grouped_mm` exists on CPU in torch
2.13 but measured 216 ms for one [96 x 1024] x 64 x [1024 x 512] call, ~50x slower than this loop), and
scatters the results back with the routing weights. No loop over idle experts and no dense [T, E] matrix.
The weighted sum accumulates in fp32, as transformers 4.57 does, and is cast to the input dtype at the end.

Parallelism: with `ep_size > 1` the module holds experts `[first_expert, first_expert + E_local)`; pairs
routed to other experts contribute zero. With `tp_size > 1` it holds an `I / tp_size` slice of every
expert's intermediate dimension (`moe_shard_plan`); outputs are then partial sums to be reduced over ranks.

Shape legend: T tokens, H hidden, K experts per token, P token-expert pairs handled here, A active experts,
E experts (local), I intermediate (local).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupedExperts(nn.Module):
    """`experts(hidden_TH, topk_idx_TK, topk_weight_TK) -> out_TH` (global expert ids in `topk_idx_TK`)."""

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        *,
        ep_rank: int = 0,
        ep_size: int = 1,
        tp_size: int = 1,
    ) -> None:
        super().__init__()
        if num_experts % ep_size or not 0 <= ep_rank < ep_size:
            raise ValueError(f"ep_size ({ep_size}) must divide num_experts ({num_experts}) and 0 <= ep_rank < ep_size")
        if intermediate_size % tp_size:
            raise ValueError(f"tp_size ({tp_size}) must divide the expert intermediate_size ({intermediate_size})")
        self.num_experts = num_experts
        self.num_local_experts = num_experts // ep_size
        self.first_expert = ep_rank * self.num_local_experts
        local_intermediate = intermediate_size // tp_size
        self.gate_up_proj = nn.Parameter(torch.empty(self.num_local_experts, 2 * local_intermediate, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(self.num_local_experts, hidden_size, local_intermediate))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`nn.Linear`'s default bound, 1/sqrt(fan_in), per expert."""
        for param in (self.gate_up_proj, self.down_proj):
            bound = 1.0 / math.sqrt(param.shape[-1])
            nn.init.uniform_(param, -bound, bound)

    def forward(self, hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, topk_weight_TK: torch.Tensor) -> torch.Tensor:
        return grouped_swiglu(
            hidden_TH, topk_idx_TK, topk_weight_TK, self.gate_up_proj, self.down_proj, first_expert=self.first_expert
        )

    def extra_repr(self) -> str:
        return (
            f"experts {self.first_expert}..{self.first_expert + self.num_local_experts - 1} of {self.num_experts}, "
            f"gate_up_proj {tuple(self.gate_up_proj.shape)}, down_proj {tuple(self.down_proj.shape)}"
        )


def grouped_swiglu(
    hidden_TH: torch.Tensor,
    topk_idx_TK: torch.Tensor,
    topk_weight_TK: torch.Tensor,
    gate_up_EXH: torch.Tensor,
    down_EHI: torch.Tensor,
    *,
    first_expert: int = 0,
) -> torch.Tensor:
    """`sum_k w[t,k] * down_e(silu(gate_e(x_t)) * up_e(x_t))` over the pairs whose expert `e = idx[t,k]` lies
    in `[first_expert, first_expert + E)`; the others contribute zero. Returns [T, H] in `hidden_TH.dtype`."""
    num_tokens, top_k = topk_idx_TK.shape
    if hidden_TH.dim() != 2 or hidden_TH.shape[0] != num_tokens or topk_weight_TK.shape != topk_idx_TK.shape:
        raise ValueError(
            f"expected hidden [T, H], idx and weight [T, K]; got {tuple(hidden_TH.shape)}, "
            f"{tuple(topk_idx_TK.shape)}, {tuple(topk_weight_TK.shape)}"
        )
    local_expert_P = topk_idx_TK.reshape(-1) - first_expert
    pair_P = None  # flat pair index (t * K + k) of each handled pair; None: all pairs
    in_range_P = (local_expert_P >= 0) & (local_expert_P < gate_up_EXH.shape[0])
    if not bool(in_range_P.all()):  # expert parallel: keep this rank's pairs
        pair_P = in_range_P.nonzero().squeeze(1)
        local_expert_P = local_expert_P.index_select(0, pair_P)
    sorted_expert_P, order_P = local_expert_P.sort(stable=True)
    if pair_P is not None:
        order_P = pair_P.index_select(0, order_P)
    out_TH = hidden_TH.new_zeros(num_tokens, hidden_TH.shape[1], dtype=torch.float32)
    if order_P.numel() == 0:
        return out_TH.to(hidden_TH.dtype)
    token_P = order_P // top_k
    active_A, counts_A = torch.unique_consecutive(sorted_expert_P, return_counts=True)
    outputs = [
        _swiglu(rows_XH, gate_up_EXH[expert], down_EHI[expert])
        for expert, rows_XH in zip(
            active_A.tolist(), hidden_TH.index_select(0, token_P).split(counts_A.tolist()), strict=False
        )
    ]
    weight_P1 = topk_weight_TK.reshape(-1).index_select(0, order_P).to(torch.float32).unsqueeze(1)
    weighted_PH = torch.cat(outputs).to(torch.float32) * weight_P1
    return out_TH.index_add_(0, token_P, weighted_PH).to(hidden_TH.dtype)


def _swiglu(rows_XH: torch.Tensor, gate_up_XH: torch.Tensor, down_HI: torch.Tensor) -> torch.Tensor:
    gate_XI, up_XI = F.linear(rows_XH, gate_up_XH).chunk(2, dim=-1)
    return F.linear(F.silu(gate_XI) * up_XI, down_HI)

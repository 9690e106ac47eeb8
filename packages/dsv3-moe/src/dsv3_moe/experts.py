"""`GroupedExperts`: the routed experts as two stacked tensors and a grouped computation.

Parameters (transformers 5.x uses the same in-memory layout and names):
`gate_up_proj` [E_local, 2 * I_local, H] (gate rows, then up rows) and `down_proj` [E_local, H, I_local].
HF checkpoints store one `experts.{e}.{gate,up,down}_proj.weight` per expert; `dsv3_moe.stacking`
declares how they stack.

Two computations, one result (`grouped_swiglu` picks by static facts only: device, shapes, autograd,
tracing; never by tensor values):

- Eager inference on CPU/CUDA (`F.grouped_mm` present, 16-byte aligned operands, no autograd): sort the
  token-expert pairs by expert, run each expert over its run of rows, scatter back with the routing
  weights; idle experts are never read. Two `F.grouped_mm` calls or a loop of `F.linear` over the active
  experts, whichever a one-time measurement on this machine found faster (`dsv3_moe.eager_choice`): a
  fast path must win on every CPU it is chosen on.
- Everywhere else (under `torch.compile`, torch_xla/Neuron tracing, autograd, other devices): a static
  computation with no data-dependent shape and no host sync (`static_swiglu`).

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

from dsv3_moe.eager_choice import eager_swiglu
from dsv3_moe.expert_operands import ExpertOperands


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
    in `[first_expert, first_expert + E)`; the others contribute zero. Returns [T, H] in `hidden_TH.dtype`.
    Expert ids are trusted (validated where they are made: the router's top-k is in range by construction)."""
    if topk_idx_TK.shape[0] == 0:
        check_pairs(hidden_TH, topk_idx_TK, topk_weight_TK)
        return hidden_TH.new_zeros(hidden_TH.shape)
    local_TK, weight_TK = local_pairs(hidden_TH, topk_idx_TK, topk_weight_TK, first_expert, gate_up_EXH.shape[0])
    ops = ExpertOperands(hidden_TH, local_TK, weight_TK, gate_up_EXH, down_EHI)
    out_TH = eager_swiglu(ops) if _grouped_mm_applies(hidden_TH, gate_up_EXH, down_EHI) else static_swiglu(ops)
    return out_TH.to(hidden_TH.dtype)


def check_pairs(hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, topk_weight_TK: torch.Tensor) -> None:
    """hidden [T, H], idx and weight [T, K], or a ValueError naming the shapes."""
    num_tokens = topk_idx_TK.shape[0]
    if hidden_TH.dim() != 2 or hidden_TH.shape[0] != num_tokens or topk_weight_TK.shape != topk_idx_TK.shape:
        raise ValueError(
            f"expected hidden [T, H], idx and weight [T, K]; got {tuple(hidden_TH.shape)}, "
            f"{tuple(topk_idx_TK.shape)}, {tuple(topk_weight_TK.shape)}"
        )


def local_pairs(
    hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, topk_weight_TK: torch.Tensor, first_expert: int, num_local: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(local ids, fp32 weights) [T, K] of the pairs this module holds the experts of: a pair routed to an
    expert outside `[first_expert, first_expert + num_local)` gets local id 0 at weight zero (exactly zero
    contribution), so every computation sees in-range ids."""
    check_pairs(hidden_TH, topk_idx_TK, topk_weight_TK)
    local_TK = topk_idx_TK - first_expert
    in_range_TK = (local_TK >= 0) & (local_TK < num_local)
    return torch.where(in_range_TK, local_TK, 0), torch.where(in_range_TK, topk_weight_TK.to(torch.float32), 0.0)


def _grouped_mm_applies(*tensors: torch.Tensor) -> bool:
    """`F.grouped_mm` (torch >= 2.10) has CPU and CUDA kernels but no CPU backward, cannot be compiled on
    CPU (torch 2.13: a graph break), and needs 16-byte aligned pointers and strides (e.g. bf16 with an
    intermediate size of 12 fails): use it for eager inference where the operands (hidden [T, H], gate_up
    [E, 2I, H], down [E, H, I]; every operand's strides are among theirs) qualify."""
    return (
        hasattr(F, "grouped_mm")
        and not torch.compiler.is_compiling()
        and all(t.device.type in ("cpu", "cuda") and _aligned_16(t) for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    )


def _aligned_16(tensor: torch.Tensor) -> bool:
    size = tensor.element_size()
    return tensor.data_ptr() % 16 == 0 and all((stride * size) % 16 == 0 for stride in tensor.stride() if stride != 1)


def static_swiglu(ops: ExpertOperands) -> torch.Tensor:
    """fp32 [T, H] for local ids `local_TK` (all in range) and fp32 weights, with shapes fixed by T, K and
    E alone and no host sync, for compilers and tracers. Few pairs (T*K <= E: decode) gather each pair's
    expert matrices and run batched matmuls (reading at most E experts' worth of weights); more pairs run
    every local expert over every token (`bmm` over E) and combine with a dense [T, E] weight matrix,
    selecting rather than multiplying so an idle expert's values (even non-finite) never reach the output.
    Differentiable."""
    hidden_TH, local_TK, weight_TK, gate_up_EXH, down_EHI = ops
    num_tokens, top_k = local_TK.shape
    num_local = gate_up_EXH.shape[0]
    inter = down_EHI.shape[-1]
    if num_tokens * top_k <= num_local:
        idx_P = local_TK.reshape(-1)
        rows_P1H = hidden_TH.repeat_interleave(top_k, dim=0)[:, None, :]
        gate_up_P1X = torch.bmm(rows_P1H, gate_up_EXH[idx_P].transpose(1, 2))
        act_P1I = F.silu(gate_up_P1X[..., :inter]) * gate_up_P1X[..., inter:]
        out_PH = torch.bmm(act_P1I, down_EHI[idx_P].transpose(1, 2))[:, 0]
        weighted_TKH = out_PH.to(torch.float32).view(num_tokens, top_k, -1) * weight_TK[..., None]
        return weighted_TKH.sum(dim=1)
    combine_TE = weight_TK.new_zeros(num_tokens, num_local).scatter_add_(1, local_TK, weight_TK)
    chosen_TE = torch.zeros_like(combine_TE, dtype=torch.bool).scatter_(1, local_TK, True)
    rows_ETH = hidden_TH.expand(num_local, *hidden_TH.shape)
    gate_up_ETX = torch.bmm(rows_ETH, gate_up_EXH.transpose(1, 2))
    act_ETI = F.silu(gate_up_ETX[..., :inter]) * gate_up_ETX[..., inter:]
    out_ETH = torch.bmm(act_ETI, down_EHI.transpose(1, 2)).to(torch.float32)
    weighted_ETH = out_ETH * combine_TE.t()[..., None]
    return torch.where(chosen_TE.t()[..., None], weighted_ETH, 0.0).sum(dim=0)

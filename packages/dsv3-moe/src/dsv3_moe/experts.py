"""`GroupedExperts`: the routed experts as two stacked tensors and a grouped computation.

Parameters (transformers 5.x uses the same in-memory layout and names):
`gate_up_proj` [E_local, 2 * I_local, H] (gate rows, then up rows) and `down_proj` [E_local, H, I_local].
HF checkpoints store one `experts.{e}.{gate,up,down}_proj.weight` per expert; `dsv3_moe.stacking`
declares how they stack.

The computation (`grouped_swiglu`) sorts the token-expert pairs by expert, runs the SwiGLU of every expert
that received tokens over its run of rows, and scatters the results back with the routing weights. No loop
over idle experts and no dense [T, E] matrix. The matmuls are two `F.grouped_mm` calls where torch has them,
no gradient is needed and the experts hold many rows each (torch 2.13 CPU: bit-identical to per-expert
`F.linear`, 3-8% faster on the medium config at 256 tokens, and 2 kernels instead of 5 per active
expert); otherwise a Python loop over the *active* experts (`F.grouped_mm` has no CPU backward), whose
few-row fp32 products (decode) go through `few_row_linear`. One fp32 token (decode at batch 1) skips the
sorting altogether: two blocked products per chosen expert, the second accumulating the weighted output
in place (medium MoE at 1 token: 1.73 -> 0.99 ms on the 2-core machine, most of it reading 21 MiB of
weights). The weighted sum accumulates in fp32, as transformers 4.57 does, and is cast to the input dtype
at the end.

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

from dsv3_moe.few_row_linear import FEW_ROWS, few_row_linear, row_blocks


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
    if num_tokens == 1 and _one_token_applies(hidden_TH, gate_up_EXH, down_EHI):
        out_1H = _swiglu_one_token(hidden_TH, topk_idx_TK[0], topk_weight_TK[0], gate_up_EXH, down_EHI, first_expert)
        return out_1H.to(hidden_TH.dtype)
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
    sorted_hidden_PH = hidden_TH.index_select(0, token_P)
    active_A, counts_A = torch.unique_consecutive(sorted_expert_P, return_counts=True)
    if _grouped_mm_applies(hidden_TH, gate_up_EXH, down_EHI) and not _decode_sized(counts_A, hidden_TH):
        expert_out_PH = _swiglu_grouped_mm(sorted_hidden_PH, sorted_expert_P, gate_up_EXH, down_EHI)
    else:
        expert_out_PH = _swiglu_active_loop(sorted_hidden_PH, active_A, counts_A, gate_up_EXH, down_EHI)
    weight_P1 = topk_weight_TK.reshape(-1).index_select(0, order_P).to(torch.float32).unsqueeze(1)
    weighted_PH = expert_out_PH.to(torch.float32) * weight_P1
    return out_TH.index_add_(0, token_P, weighted_PH).to(hidden_TH.dtype)


def _grouped_mm_applies(*tensors: torch.Tensor) -> bool:
    """`F.grouped_mm` (torch >= 2.10) has CPU and CUDA kernels but no CPU backward, and needs 16-byte aligned
    pointers and strides (e.g. bf16 with an intermediate size of 12 fails): use it for inference where the
    operands (hidden [T, H], gate_up [E, 2I, H], down [E, H, I]; every operand's strides are among theirs)
    qualify."""
    return (
        hasattr(F, "grouped_mm")
        and all(t.device.type in ("cpu", "cuda") and _aligned_16(t) for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    )


def _decode_sized(counts_A: torch.Tensor, hidden_TH: torch.Tensor) -> bool:
    """fp32 with at most FEW_ROWS pairs per active expert on average (decode, small batches): the active loop
    with `few_row_linear` streams each expert's weights on every core and beats `F.grouped_mm` (one thread
    per expert product), measured 1.2-1.9x on the medium MoE from 1 to 32 tokens, a tie at 64."""
    return hidden_TH.dtype == torch.float32 and int(counts_A.sum()) <= FEW_ROWS * counts_A.numel()


def _one_token_applies(hidden_1H: torch.Tensor, gate_up_EXH: torch.Tensor, down_EHI: torch.Tensor) -> bool:
    """One fp32 CPU token without autograd, contiguous stacks whose rows split into blocks (see below)."""
    tensors = (hidden_1H, gate_up_EXH, down_EHI)
    return (
        all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and row_blocks(gate_up_EXH.shape[1]) > 0
        and row_blocks(down_EHI.shape[1]) > 0
    )


def _swiglu_one_token(
    hidden_1H: torch.Tensor,
    idx_K: torch.Tensor,
    weight_K: torch.Tensor,
    gate_up_EXH: torch.Tensor,
    down_EHI: torch.Tensor,
    first_expert: int,
) -> torch.Tensor:
    """Decode at batch 1: per chosen expert, two blocked products (`few_row_linear`'s scheme: W's rows as G
    blocks, one `bmm` that streams them on every core) and the routing weight folded into the second one,
    which accumulates in place (`baddbmm_(alpha=w)`). Six kernels per expert and no sort/scatter: at this
    size the per-op overhead, not the arithmetic, is what the generic path pays for. The vectors are passed
    as transposed rows (strides (0, 1, n)): an expanded [n, 1] column with unit strides sends `bmm` down a
    path 4x slower. Returns fp32 [1, H]."""
    num_local, double_inter, hidden = gate_up_EXH.shape
    inter = double_inter // 2
    up_blocks, down_blocks = row_blocks(double_inter), row_blocks(hidden)
    gate_up_EGBH = gate_up_EXH.view(num_local, up_blocks, double_inter // up_blocks, hidden)
    down_EGBI = down_EHI.view(num_local, down_blocks, hidden // down_blocks, inter)
    x_GH1 = hidden_1H.t().expand(up_blocks, hidden, 1)  # a [1, H] row's transpose: BLAS reads it as x^T
    acc_GB1 = hidden_1H.new_zeros(down_blocks, hidden // down_blocks, 1)
    for expert, weight in zip(idx_K.tolist(), weight_K.tolist(), strict=True):
        local = expert - first_expert
        if not 0 <= local < num_local:  # expert parallel: another rank's expert
            continue
        gate_up_X = torch.bmm(gate_up_EGBH[local], x_GH1).view(double_inter)
        act_I = F.silu(gate_up_X[:inter]).mul_(gate_up_X[inter:])
        act_GI1 = act_I.view(1, inter).t().expand(down_blocks, inter, 1)
        acc_GB1.baddbmm_(down_EGBI[local], act_GI1, alpha=weight)
    return acc_GB1.view(1, hidden)


def _aligned_16(tensor: torch.Tensor) -> bool:
    size = tensor.element_size()
    return tensor.data_ptr() % 16 == 0 and all((stride * size) % 16 == 0 for stride in tensor.stride() if stride != 1)


def _swiglu_grouped_mm(
    sorted_hidden_PH: torch.Tensor, sorted_expert_P: torch.Tensor, gate_up_EXH: torch.Tensor, down_EHI: torch.Tensor
) -> torch.Tensor:
    """Two grouped matmuls over the runs of rows; the kernel skips experts whose run is empty."""
    ends_E = torch.bincount(sorted_expert_P, minlength=gate_up_EXH.shape[0]).cumsum(0).to(torch.int32)
    gate_PI, up_PI = F.grouped_mm(sorted_hidden_PH, gate_up_EXH.transpose(1, 2), offs=ends_E).chunk(2, dim=-1)
    return F.grouped_mm(F.silu(gate_PI) * up_PI, down_EHI.transpose(1, 2), offs=ends_E)


def _swiglu_active_loop(
    sorted_hidden_PH: torch.Tensor,
    active_A: torch.Tensor,
    counts_A: torch.Tensor,
    gate_up_EXH: torch.Tensor,
    down_EHI: torch.Tensor,
) -> torch.Tensor:
    """One SwiGLU per active expert (ids `active_A`, runs of `counts_A` rows); differentiable, older torch."""
    outputs = []
    for expert, rows_XH in zip(active_A.tolist(), sorted_hidden_PH.split(counts_A.tolist()), strict=False):
        gate_XI, up_XI = few_row_linear(rows_XH, gate_up_EXH[expert]).chunk(2, dim=-1)
        outputs.append(few_row_linear(F.silu(gate_XI) * up_XI, down_EHI[expert]))
    return torch.cat(outputs)

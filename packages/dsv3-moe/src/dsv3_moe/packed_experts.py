"""`PackedExperts`: `GroupedExperts`' eager computation over each expert's matrices prepacked for oneDNN,
swapped in only where a measurement on this machine says it is faster (`faster_experts`).

Why: the active-expert loop (`dsv3_moe.eager_choice`) is a few-row `F.linear` per active expert, and on
some CPUs `F.linear`'s few-row kernels read weights far below the memory bandwidth (the measurements are
in `dsv3_blocks.packed_linear`). The same loop over packed weights is the same sum in the same order of
experts; only the products' fp32 rounding order differs. The packed weights are opaque oneDNN tensors,
so this module is for eager CPU inference only (no autograd, no `torch.compile`, no `state_dict`), made
after the weights are loaded and cast, and it releases the stacks it was made from.

Shape legend: T tokens, H hidden, K experts per token, E local experts, X = 2 * I (gate rows, then up
rows), I intermediate (local).
"""

from __future__ import annotations

import torch
from torch import nn

from dsv3_blocks.packed_linear import pack_weight, packable, packed_product
from dsv3_blocks.timing import fastest
from dsv3_moe.eager_choice import expert_loop
from dsv3_moe.experts import GroupedExperts, local_pairs

TIMED_TOKENS = (1, 16)  # a decode step's tokens and a short prompt's: packed must win at both

_packed_won: dict[tuple[object, ...], bool] = {}  # per process: (stack shapes, dtype, top_k, threads) -> won


class PackedExperts(nn.Module):
    """`experts(hidden_TH, topk_idx_TK, topk_weight_TK) -> out_TH`, as `GroupedExperts` (global ids)."""

    def __init__(self, experts: GroupedExperts) -> None:
        super().__init__()
        self.num_experts, self.num_local_experts = experts.num_experts, experts.num_local_experts
        self.first_expert = experts.first_expert
        self.gate_up_XH = [pack_weight(matrix) for matrix in experts.gate_up_proj]
        self.down_HI = [pack_weight(matrix) for matrix in experts.down_proj]

    def forward(self, hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, topk_weight_TK: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            raise RuntimeError("PackedExperts is an eager kernel: compile a model loaded with the reference kernels")
        if topk_idx_TK.shape[0] == 0:
            return hidden_TH.new_zeros(hidden_TH.shape)
        local_TK, weight_TK = local_pairs(
            hidden_TH, topk_idx_TK, topk_weight_TK, self.first_expert, self.num_local_experts
        )
        out_TH = expert_loop(
            hidden_TH,
            local_TK,
            weight_TK,
            self.num_local_experts,
            lambda e: (self.gate_up_XH[e], self.down_HI[e]),
            product=packed_product,
        )
        return out_TH.to(hidden_TH.dtype)

    def extra_repr(self) -> str:
        return f"experts {self.first_expert}..{self.first_expert + self.num_local_experts - 1} of {self.num_experts}"


def packing_applies(experts: nn.Module) -> bool:
    """A `GroupedExperts` with packable stacks (`dsv3_blocks.packed_linear.packable`)."""
    return type(experts) is GroupedExperts and packable(experts.gate_up_proj)


def faster_experts(experts: nn.Module, top_k: int, *, measure: bool = True) -> nn.Module:
    """`PackedExperts(experts)` where packing applies and, timed on these very experts with random routing
    at `TIMED_TOKENS` tokens, it beat the module's own eager computation; else `experts` (measured once per
    process and kind of stack, so later layers of a kind that lost are not packed at all). `measure=False`
    packs wherever packing applies (for tests and benchmarks of the one form)."""
    if not packing_applies(experts):
        return experts
    assert isinstance(experts, GroupedExperts)
    if not measure:
        return PackedExperts(experts)
    stack = experts.gate_up_proj
    key = (tuple(stack.shape), tuple(experts.down_proj.shape), stack.dtype, top_k, torch.get_num_threads())
    if key in _packed_won:
        return PackedExperts(experts) if _packed_won[key] else experts
    packed = PackedExperts(experts)
    _packed_won[key] = all(_packed_faster(experts, packed, top_k, tokens) for tokens in TIMED_TOKENS)
    return packed if _packed_won[key] else experts


@torch.inference_mode()
def _packed_faster(experts: GroupedExperts, packed: PackedExperts, top_k: int, tokens: int) -> bool:
    generator = torch.Generator().manual_seed(tokens)
    hidden_TH = torch.randn(tokens, experts.gate_up_proj.shape[-1], generator=generator).to(experts.gate_up_proj.dtype)
    scores_TE = torch.rand(tokens, experts.num_experts, generator=generator)
    topk_idx_TK = scores_TE.topk(min(top_k, experts.num_experts), dim=-1).indices
    topk_weight_TK = torch.full(topk_idx_TK.shape, 1.0 / top_k)
    candidates = {
        "plain": lambda: experts(hidden_TH, topk_idx_TK, topk_weight_TK),
        "packed": lambda: packed(hidden_TH, topk_idx_TK, topk_weight_TK),
    }
    return fastest(candidates) == "packed"

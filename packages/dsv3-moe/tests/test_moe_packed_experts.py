"""`PackedExperts` (each expert's matrices prepacked for oneDNN) against the closed form
`out[t] = sum_k w[t,k] * down_e(silu(gate_e(x_t)) * up_e(x_t))` in fp64 on the same weights.

Tolerance: fp32 1e-5 absolute on O(1) outputs (summation order only, as test_moe_experts); bf16 3e-2
(products rounded to bf16 between the two projections, as the reference loop does).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dsv3_moe import GroupedExperts
from dsv3_moe.packed_experts import PackedExperts, faster_experts, packing_applies

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")

E, H, INTER, K = 8, 16, 12, 3


def closed_form(
    stack_up: torch.Tensor,
    stack_down: torch.Tensor,
    hidden: torch.Tensor,
    idx: torch.Tensor,
    weight: torch.Tensor,
    first: int,
) -> torch.Tensor:
    up, down, x = stack_up.double(), stack_down.double(), hidden.double()
    out = torch.zeros(hidden.shape[0], H, dtype=torch.float64)
    for t in range(hidden.shape[0]):
        for k in range(idx.shape[1]):
            e = int(idx[t, k]) - first
            if 0 <= e < up.shape[0]:
                gate_up = up[e] @ x[t]
                out[t] += float(weight[t, k]) * (down[e] @ (F.silu(gate_up[:INTER]) * gate_up[INTER:]))
    return out


def routed(seed: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    hidden = torch.randn(tokens, H)
    idx = torch.stack([torch.randperm(E)[:K] for _ in range(tokens)])
    return hidden, idx, torch.rand(tokens, K)


@pytest.mark.parametrize("tokens", [1, 7])
@pytest.mark.parametrize(("ep_rank", "ep_size"), [(0, 1), (1, 2)])
def test_packed_experts_equal_the_closed_form_fp32(tokens: int, ep_rank: int, ep_size: int) -> None:
    torch.manual_seed(3)
    experts = GroupedExperts(E, H, INTER, ep_rank=ep_rank, ep_size=ep_size)
    up, down = experts.gate_up_proj.detach().clone(), experts.down_proj.detach().clone()
    hidden, idx, weight = routed(tokens, tokens)
    with torch.inference_mode():
        got = PackedExperts(experts)(hidden, idx, weight)
    expected = closed_form(up, down, hidden, idx, weight, experts.first_expert)
    assert got.dtype == torch.float32
    assert (got.double() - expected).abs().max() < 1e-5


def test_packed_experts_bf16_within_bf16_rounding() -> None:
    torch.manual_seed(4)
    experts = GroupedExperts(E, H, INTER).to(torch.bfloat16)
    hidden, idx, weight = routed(5, 4)
    hidden = hidden.to(torch.bfloat16)
    expected = closed_form(experts.gate_up_proj.detach(), experts.down_proj.detach(), hidden, idx, weight, 0)
    with torch.inference_mode():
        got = PackedExperts(experts)(hidden, idx, weight)
    assert got.dtype == torch.bfloat16
    assert (got.double() - expected).abs().max() < 3e-2


def test_no_tokens_give_an_empty_output() -> None:
    experts = GroupedExperts(E, H, INTER)
    with torch.inference_mode():
        out = PackedExperts(experts)(torch.zeros(0, H), torch.zeros(0, K, dtype=torch.int64), torch.zeros(0, K))
    assert out.shape == (0, H)


def test_faster_experts_keeps_the_sum_and_refuses_by_static_facts() -> None:
    assert not packing_applies(GroupedExperts(E, H, INTER).half())
    assert not packing_applies(torch.nn.Linear(4, 4))
    torch.manual_seed(5)
    experts = GroupedExperts(E, H, INTER)
    up, down = experts.gate_up_proj.detach().clone(), experts.down_proj.detach().clone()
    hidden, idx, weight = routed(6, 2)
    with torch.inference_mode():
        chosen = faster_experts(experts, K)
        got = chosen(hidden, idx, weight)
    assert isinstance(chosen, (GroupedExperts, PackedExperts))
    assert (got.double() - closed_form(up, down, hidden, idx, weight, 0)).abs().max() < 1e-5

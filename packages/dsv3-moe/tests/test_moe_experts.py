"""`GroupedExperts` against the closed form `out[t] = sum_k w[t,k] * down_e(silu(gate_e(x_t)) * up_e(x_t))`
written as a per-(token, slot) loop over plain per-expert matrices, plus the properties the grouped
computation promises: idle experts are never touched, pairs outside the local expert range contribute
zero, and accumulation is fp32.

Tolerance: fp32 1e-5 absolute on O(1) outputs (different summation order only; measured ~5e-7).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dsv3_moe import ExpertOperands, GroupedExperts
from dsv3_moe.eager_choice import KERNELS, chosen_kernels
from dsv3_moe.experts import _grouped_mm_applies, static_swiglu

E, H, INTER, K, T = 8, 16, 12, 3, 10


def make_inputs(seed: int, tokens: int = T) -> tuple[GroupedExperts, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    experts = GroupedExperts(E, H, INTER)
    hidden = torch.randn(tokens, H)
    idx = torch.stack([torch.randperm(E)[:K] for _ in range(tokens)])
    weight = torch.rand(tokens, K)
    return experts, hidden, idx, weight


def closed_form(experts: GroupedExperts, hidden: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(hidden.shape[0], H)
    for t in range(hidden.shape[0]):
        for k in range(K):
            e = int(idx[t, k])
            gate, up = experts.gate_up_proj[e, :INTER], experts.gate_up_proj[e, INTER:]
            out[t] += weight[t, k] * (experts.down_proj[e] @ (F.silu(gate @ hidden[t]) * (up @ hidden[t])))
    return out


def run_path(path: str, experts: GroupedExperts, *args: torch.Tensor) -> torch.Tensor:
    """`grouped_mm`: eager inference, two `F.grouped_mm` calls; `static_pairs` / `static_dense`: the static
    computation (compilers, tracers) with T*K <= E (per-pair gathered experts) or more pairs (every local
    expert); `autograd`: with gradients, which also runs the static computation."""
    hidden, idx, weight = args
    if path.startswith("eager_"):  # each eager kernel on its own, whichever the calibration picks
        if not hasattr(F, "grouped_mm"):
            pytest.skip("this torch has no F.grouped_mm; the static path is the one in use")
        with torch.no_grad():
            operands = ExpertOperands(hidden, idx, weight, experts.gate_up_proj, experts.down_proj)
            return KERNELS[path.removeprefix("eager_")](operands)
    if path == "grouped_mm":
        if not hasattr(F, "grouped_mm"):
            pytest.skip("this torch has no F.grouped_mm; the static path is the one in use")
        with torch.no_grad():
            assert _grouped_mm_applies(hidden, experts.gate_up_proj, experts.down_proj)
            return experts(*args)
    if path.startswith("static"):
        assert (hidden.shape[0] * K <= E) == (path == "static_pairs")
        with torch.no_grad():
            return static_swiglu(ExpertOperands(hidden, idx, weight, experts.gate_up_proj, experts.down_proj))
    with torch.enable_grad():
        assert not _grouped_mm_applies(hidden, experts.gate_up_proj, experts.down_proj)
        return experts(*args).detach()


PATHS = ["grouped_mm", "eager_grouped", "eager_loop", "static_pairs", "static_dense", "autograd"]
TOKENS = {
    "grouped_mm": 4 * T,
    "eager_grouped": 4 * T,
    "eager_loop": T,
    "static_pairs": 2,
    "static_dense": T,
    "autograd": T,
}


@pytest.mark.parametrize("path", PATHS)
def test_matches_closed_form(path: str) -> None:
    experts, hidden, idx, weight = make_inputs(0, TOKENS[path])
    with torch.no_grad():
        want = closed_form(experts, hidden, idx, weight)
    assert float(want.abs().max()) > 0.2
    torch.testing.assert_close(run_path(path, experts, hidden, idx, weight), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_idle_experts_are_never_computed(path: str) -> None:
    """Idle experts' weights are NaN: any computation that multiplies their outputs (even by a zero weight)
    would leak NaN into the output; the dense static form selects instead."""
    experts, hidden, idx, weight = make_inputs(1, TOKENS[path])
    idx = idx % 4  # only experts 0..3 are used (duplicates within a token are fine for the math)
    with torch.no_grad():
        want = closed_form(experts, hidden, idx, weight)
        experts.gate_up_proj[4:] = float("nan")
        experts.down_proj[4:] = float("nan")
    torch.testing.assert_close(run_path(path, experts, hidden, idx, weight), want, rtol=0, atol=1e-5)


def test_autograd_path_is_differentiable() -> None:
    experts, hidden, idx, weight = make_inputs(5)
    hidden.requires_grad_(True)
    experts(hidden, idx, weight).square().sum().backward()
    assert hidden.grad is not None
    assert experts.gate_up_proj.grad is not None
    assert bool(experts.gate_up_proj.grad[idx.unique()].abs().sum(dim=(1, 2)).gt(0).all())


@pytest.mark.parametrize("tokens", [T, 1])
@pytest.mark.parametrize("grad", [False, True])  # eager grouped_mm, and the static form (autograd)
def test_local_expert_ranges_sum_to_the_whole(tokens: int, grad: bool) -> None:
    experts, hidden, idx, weight = make_inputs(2, tokens)
    with torch.no_grad():
        want = experts(hidden, idx, weight)
    for ep_size in (2, 4):
        per_rank = E // ep_size
        total = torch.zeros(tokens, H)
        for rank in range(ep_size):
            local = GroupedExperts(E, H, INTER, ep_rank=rank, ep_size=ep_size)
            with torch.no_grad():
                local.gate_up_proj.copy_(experts.gate_up_proj[rank * per_rank : (rank + 1) * per_rank])
                local.down_proj.copy_(experts.down_proj[rank * per_rank : (rank + 1) * per_rank])
            with torch.set_grad_enabled(grad):
                part = local(hidden, idx, weight).detach()
            elsewhere = ((idx < rank * per_rank) | (idx >= (rank + 1) * per_rank)).all(dim=1)
            assert bool((part[elsewhere] == 0).all())  # tokens routed entirely elsewhere: exactly zero
            total += part
        torch.testing.assert_close(total, want, rtol=0, atol=1e-5)


@torch.no_grad()
def test_no_tokens_and_no_local_pairs() -> None:
    experts, hidden, idx, weight = make_inputs(3)
    assert experts(hidden[:0], idx[:0], weight[:0]).shape == (0, H)
    local = GroupedExperts(E, H, INTER, ep_rank=1, ep_size=2)  # experts 4..7
    out = local(hidden, idx % 4, weight)
    assert torch.equal(out, torch.zeros(T, H))


@torch.no_grad()
def test_bf16_in_bf16_out() -> None:
    """bf16 experts return bf16, close to the fp32 closed form over the same bf16-rounded weights: 2% covers
    the bf16 roundings (2^-8 each) of the matmul outputs and the activation; the weighted sum is fp32.
    (Intermediate size 12 in bf16 is 24 bytes, not 16-byte aligned: this runs the static computation.)"""
    experts, hidden, idx, weight = make_inputs(4)
    experts_bf16 = GroupedExperts(E, H, INTER).to(torch.bfloat16)
    experts_bf16.load_state_dict(experts.state_dict())
    got = experts_bf16(hidden.bfloat16(), idx, weight)
    assert got.dtype == torch.bfloat16
    want = closed_form(experts_bf16.float(), hidden.bfloat16().float(), idx, weight)
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


def test_shapes_and_validation() -> None:
    experts = GroupedExperts(E, H, INTER, ep_rank=1, ep_size=2, tp_size=3)
    assert experts.gate_up_proj.shape == (4, 8, H)
    assert experts.down_proj.shape == (4, H, 4)
    assert experts.first_expert == 4
    for kwargs in ({"ep_size": 3}, {"ep_rank": 2, "ep_size": 2}, {"tp_size": 5}):
        with pytest.raises(ValueError, match="size"):
            GroupedExperts(E, H, INTER, **kwargs)


def test_eager_choice_is_measured_once_per_kind_of_step() -> None:
    """The first eager call of a kind of step (here 1 token, then 40) measures both kernels and keeps one;
    later calls of that kind reuse it."""
    if not hasattr(F, "grouped_mm"):
        pytest.skip("this torch has no F.grouped_mm; the static path is the one in use")
    experts = GroupedExperts(E, H, 2 * INTER)  # a shape no other test uses
    with torch.no_grad():
        for tokens in (1, 1, 40, 40):
            _, hidden, idx, weight = make_inputs(2, tokens)
            experts(hidden, idx, weight)
    keys = [key for key in chosen_kernels() if key[2] == tuple(experts.gate_up_proj.shape)]
    assert len(keys) == 2
    assert {chosen_kernels()[key] for key in keys} <= set(KERNELS)

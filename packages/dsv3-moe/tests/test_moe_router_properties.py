"""Invariants of `route` over random configurations and scores (hypothesis), each checked from its
definition: unique experts, only from the best groups (top-2 sum or max), the best experts of those
groups, weights that are the unbiased scores, normalized to `routed_scaling_factor`."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv3_moe import RoutingParams, route


@st.composite
def routing_cases(draw: st.DrawFn) -> tuple[RoutingParams, torch.Tensor, torch.Tensor | None]:
    method = draw(st.sampled_from(["noaux_tc", "greedy", "group_limited_greedy"]))
    n_group = draw(st.sampled_from([1, 2, 4]))
    per_group = draw(st.integers(2, 5))
    topk_group = draw(st.integers(1, n_group))
    candidates = n_group * per_group if method == "greedy" else topk_group * per_group
    params = RoutingParams(
        topk_method=method,
        n_routed_experts=n_group * per_group,
        n_group=n_group,
        topk_group=topk_group,
        num_experts_per_tok=draw(st.integers(1, candidates)),
        norm_topk_prob=draw(st.booleans()),
        routed_scaling_factor=draw(st.sampled_from([1.0, 2.5])),
    )
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    logits = torch.randn(5, params.n_routed_experts, generator=generator) * 2
    bias = None
    if method == "noaux_tc":
        bias = torch.randn(params.n_routed_experts, generator=generator) * draw(st.sampled_from([0.1, 1.0])) - 0.5
    return params, logits, bias


@settings(max_examples=60, deadline=None)
@given(routing_cases())
def test_route_invariants(case: tuple[RoutingParams, torch.Tensor, torch.Tensor | None]) -> None:
    params, logits, bias = case
    idx, weight = route(logits, bias, params)
    scores = logits.sigmoid() if bias is not None else logits.softmax(-1)
    choice = scores + bias if bias is not None else scores
    for t in range(logits.shape[0]):
        chosen = idx[t].tolist()
        assert len(set(chosen)) == params.num_experts_per_tok
        allowed = list(range(params.n_routed_experts))
        if params.topk_method != "greedy":
            grouped = choice[t].view(params.n_group, -1)
            group_score = grouped.topk(2).values.sum(-1) if bias is not None else grouped.amax(-1)
            kept_groups = set(group_score.topk(params.topk_group).indices.tolist())
            allowed = [e for e in allowed if e // params.experts_per_group in kept_groups]
        assert set(chosen) <= set(allowed)
        others = [e for e in allowed if e not in chosen]
        if others:
            assert float(choice[t, chosen].min()) >= float(choice[t, others].max())
        expected = scores[t, chosen]
        if bias is not None and params.norm_topk_prob:
            expected = expected / expected.sum()
        torch.testing.assert_close(weight[t], expected * params.routed_scaling_factor, rtol=1e-6, atol=1e-7)

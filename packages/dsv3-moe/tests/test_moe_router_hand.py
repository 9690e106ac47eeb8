"""Routing against numbers worked out by hand (the oracle is arithmetic, not another implementation).

Scores are chosen first and the logits derived from them: `logit(p)` for sigmoid routers (sigmoid(logit(p))
= p to ~1e-7) and `log(p)` with sum(p) = 1 for softmax routers (softmax(log p) = p). Expected weights are
exact fractions written out; tolerance 1e-6 covers the ~1e-7 float32 round trip of the scores.

8 experts in 4 groups of 2: G0 = {0, 1}, G1 = {2, 3}, G2 = {4, 5}, G3 = {6, 7}.
"""

from __future__ import annotations

import pytest
import torch

from dsv3_moe import RoutingParams, route

V3_PARAMS = RoutingParams(
    topk_method="noaux_tc",
    n_routed_experts=8,
    n_group=4,
    topk_group=2,
    num_experts_per_tok=3,
    norm_topk_prob=True,
    routed_scaling_factor=2.5,
)
BIAS = torch.tensor([-0.4, 0.0, 0.1, 0.05, 0.3, 0.0, 0.0, 0.2])
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.5, 0.6, 0.2, 0.8, 0.3, 0.4],  # token 0
        [0.3, 0.2, 0.1, 0.7, 0.4, 0.45, 0.05, 0.6],  # token 1
    ]
)


def test_noaux_tc_by_hand() -> None:
    # Token 0: s' = s + bias = [0.5, 0.1, 0.6, 0.65, 0.5, 0.8, 0.3, 0.6]
    #   group score = sum of its top-2 (both): G0 0.6, G1 1.25, G2 1.3, G3 0.9 -> keep G2, G1
    #   candidates 2: 0.6, 3: 0.65, 4: 0.5, 5: 0.8 -> top-3 by s': 5, 3, 2
    #   (expert 0 has the best raw score, 0.9, but its bias -0.4 and weak partner sink group G0)
    #   weights = unbiased s [0.8, 0.6, 0.5] / 1.9 * 2.5 = [1.0526316, 0.7894737, 0.6578947]
    # Token 1: s' = [-0.1, 0.2, 0.2, 0.75, 0.7, 0.45, 0.05, 0.8]
    #   groups: G0 0.1, G1 0.95, G2 1.15, G3 0.85 -> keep G2, G1; G3 holds the best single s' (0.8, expert
    #   7) but loses on the top-2 sum (a max-based group score would have kept it)
    #   candidates 2: 0.2, 3: 0.75, 4: 0.7, 5: 0.45 -> top-3: 3, 4, 5
    #   weights = s [0.7, 0.4, 0.45] / 1.55 * 2.5 = [1.1290323, 0.6451613, 0.7258065]
    #   (expert 4 is chosen before 5 thanks to its bias, yet weighs less: the bias selects, never weighs)
    idx, weight = route(torch.logit(SCORES), BIAS, V3_PARAMS)
    assert idx.tolist() == [[5, 3, 2], [3, 4, 5]]
    assert idx.dtype == torch.int64
    assert weight.dtype == torch.float32
    expected = torch.tensor([[0.8, 0.6, 0.5], [0.7, 0.4, 0.45]]) * torch.tensor([[2.5 / 1.9], [2.5 / 1.55]])
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)


def test_noaux_tc_without_normalization_by_hand() -> None:
    # Same choice; weights are the raw scores times 2.5: [2.0, 1.5, 1.25] and [1.75, 1.0, 1.125]
    params = RoutingParams(**{**V3_PARAMS.__dict__, "norm_topk_prob": False})
    idx, weight = route(torch.logit(SCORES), BIAS, params)
    assert idx.tolist() == [[5, 3, 2], [3, 4, 5]]
    torch.testing.assert_close(weight, torch.tensor([[2.0, 1.5, 1.25], [1.75, 1.0, 1.125]]), rtol=0, atol=1e-6)


def test_all_negative_biases_by_hand() -> None:
    # Token 1's scores with every bias -1: s' = s - 1 = [-0.7, -0.8, -0.9, -0.3, -0.6, -0.55, -0.95, -0.4]
    #   groups: G0 -1.5, G1 -1.2, G2 -1.15, G3 -1.35 -> keep G2, G1
    #   candidates 2: -0.9, 3: -0.3, 4: -0.6, 5: -0.55 -> top-3: 3, 5, 4
    #   weights = s [0.7, 0.45, 0.4] / 1.55 * 2.5 = [1.1290323, 0.7258065, 0.6451613]
    # A 0.0 mask (transformers 4.57, NxD) would give the masked experts 0, 1, 6, 7 the value 0.0, above every
    # kept s' (all negative), and pick three of them: all outside the kept groups. -inf keeps them out.
    idx, weight = route(torch.logit(SCORES[1:]), torch.full((8,), -1.0), V3_PARAMS)
    assert idx.tolist() == [[3, 5, 4]]
    biased = SCORES[1] - 1.0
    kept = torch.tensor([False, False, True, True, True, True, False, False])  # G1, G2 as worked out above
    zero_masked_choice = set(biased.masked_fill(~kept, 0.0).topk(3).indices.tolist())
    assert zero_masked_choice <= {0, 1, 6, 7}  # the 0.0-mask variant: every pick outside the kept groups
    torch.testing.assert_close(weight, torch.tensor([[0.7, 0.45, 0.4]]) * 2.5 / 1.55, rtol=0, atol=1e-6)


SOFTMAX_P = torch.tensor([[0.05, 0.3, 0.1, 0.2, 0.05, 0.15, 0.1, 0.05]])  # sums to 1


@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_softmax_greedy_and_group_limited_by_hand(norm_topk_prob: bool) -> None:
    # greedy: top-3 of p = 1 (0.3), 3 (0.2), 5 (0.15); times 16 -> [4.8, 3.2, 2.4]
    # group_limited_greedy: group max G0 0.3, G1 0.2, G2 0.15, G3 0.1 -> keep G0, G1;
    #   top-3 of {0: 0.05, 1: 0.3, 2: 0.1, 3: 0.2} = 1, 3, 2 -> [4.8, 3.2, 1.6] (expert 5 is now excluded)
    # norm_topk_prob is ignored for softmax routers, as transformers 4.57 and 5.x do.
    common = {"n_routed_experts": 8, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3}
    greedy = RoutingParams(topk_method="greedy", **common, norm_topk_prob=norm_topk_prob, routed_scaling_factor=16.0)
    limited = RoutingParams(
        topk_method="group_limited_greedy", **common, norm_topk_prob=norm_topk_prob, routed_scaling_factor=16.0
    )
    idx, weight = route(torch.log(SOFTMAX_P), None, greedy)
    assert idx.tolist() == [[1, 3, 5]]
    torch.testing.assert_close(weight, torch.tensor([[4.8, 3.2, 2.4]]), rtol=0, atol=1e-5)
    idx, weight = route(torch.log(SOFTMAX_P), None, limited)
    assert idx.tolist() == [[1, 3, 2]]
    torch.testing.assert_close(weight, torch.tensor([[4.8, 3.2, 1.6]]), rtol=0, atol=1e-5)


def test_bad_inputs_raise_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="float32"):
        route(torch.logit(SCORES).double(), BIAS, V3_PARAMS)
    with pytest.raises(ValueError, match="correction bias"):
        route(torch.logit(SCORES), None, V3_PARAMS)
    with pytest.raises(ValueError, match=r"\[T, 8\]"):
        route(torch.logit(SCORES[:, :6]), BIAS, V3_PARAMS)
    with pytest.raises(ValueError, match="top-2"):  # groups of one expert: see test_moe_router_edges
        RoutingParams(**{**V3_PARAMS.__dict__, "n_group": 8, "topk_group": 4})
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        RoutingParams(**{**V3_PARAMS.__dict__, "num_experts_per_tok": 5})

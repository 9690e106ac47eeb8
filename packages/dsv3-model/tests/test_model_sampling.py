"""Sampling filters against hand-computed cases and transformers' own logits warpers."""

from __future__ import annotations

import math

import pytest
import torch

from dsv3_model.sampling import MIN_TEMPERATURE, SamplingParams, filter_logits, make_generator, select_next

NEG_INF = float("-inf")


def test_greedy_is_argmax_of_raw_logits():
    logits = torch.tensor([[0.1, 2.0, -1.0], [5.0, 4.9, 0.0]])
    assert select_next(logits, SamplingParams(), None).tolist() == [1, 0]


def test_top_p_hand_case():
    # probabilities 0.5, 0.3, 0.15, 0.05: ascending cumulative 0.05, 0.20, 0.50, 1.00; with top_p 0.8 the
    # tokens whose cumulative mass is <= 0.2 (ids 3 and 2) go, ids 0 and 1 (mass 0.8) stay.
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.15), math.log(0.05)]])
    kept = filter_logits(logits, SamplingParams(temperature=1.0, top_p=0.8))
    assert torch.isfinite(kept).tolist() == [[True, True, False, False]]


def test_top_k_hand_case():
    kept = filter_logits(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), SamplingParams(temperature=1.0, top_k=2))
    assert kept.tolist() == [[NEG_INF, 3.0, NEG_INF, 2.0]]


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.9), (0.8, 7, 0.6)]
)
def test_filters_match_transformers_warpers(temperature, top_k, top_p):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1.0:
        expected = TopPLogitsWarper(top_p)(None, expected)
    ours = filter_logits(logits, SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p))
    assert torch.equal(torch.isfinite(ours), torch.isfinite(expected))
    torch.testing.assert_close(ours[torch.isfinite(ours)], expected[torch.isfinite(expected)], rtol=0, atol=1e-6)


def test_seeded_sampling_is_reproducible_and_stays_in_top_k():
    params = SamplingParams(temperature=1.0, top_k=3, seed=123)
    logits = torch.randn(1, 100).expand(400, -1)
    first = select_next(logits, params, make_generator(params))
    second = select_next(logits, params, make_generator(params))
    assert torch.equal(first, second)
    assert set(first.tolist()) <= set(torch.topk(logits[0], 3).indices.tolist())
    assert len(set(first.tolist())) > 1  # really sampling


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -1.0},
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"temperature": 1e-39},  # below float32's smallest normal: 0/0 in float32
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_p": math.nan},
    ],
)
def test_invalid_sampling_params_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


@pytest.mark.parametrize("temperature", [1e-37, MIN_TEMPERATURE])
def test_tiny_temperature_samples_the_argmax(temperature):
    # As the temperature goes to 0 the distribution becomes one-hot on the largest logit: here the others
    # are at least 1 below it, so their probability is exp(-1 / 1e-37) = 0. Unshifted, 50 / 1e-37 = 5e38
    # overflows float32 (max 3.4e38) to inf and the softmax is NaN (torch.multinomial raises).
    params = SamplingParams(temperature=temperature, seed=0)
    logits = torch.tensor([[0.0, 50.0, 30.0, 49.0], [90.0, -2.0, 89.0, 1.0]]).repeat(50, 1)
    chosen = select_next(logits, params, make_generator(params))
    assert chosen.tolist() == [1, 0] * 50


def test_shifting_by_the_row_max_keeps_the_sampled_tokens():
    # softmax((x - max) / t) == softmax(x / t): the same seed draws the same tokens as transformers' warpers
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(64, 40) * 3
    params = SamplingParams(temperature=0.8, top_k=10, seed=5)
    expected_probs = TopKLogitsWarper(10)(None, TemperatureLogitsWarper(0.8)(None, logits.clone())).softmax(-1)
    expected = torch.multinomial(expected_probs, 1, generator=make_generator(params)).squeeze(-1)
    assert torch.equal(select_next(logits, params, make_generator(params)), expected)

"""Next-token selection: greedy, temperature, top-k and top-p (nucleus), reproducible with a seed.

Shapes: B batch, V vocabulary. Filtering follows transformers' logits warpers in the same order
(temperature, then top-k, then top-p) so a seeded run can be compared with `generate(do_sample=True)`
semantics; greedy is `argmax` of the raw logits. Sampling first subtracts each row's largest logit
(the distribution is unchanged) so that a small temperature cannot overflow a logit to inf and turn the
softmax into NaN: the largest becomes 0, the others large negative or -inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Below float32's smallest normal a temperature divides the largest (shifted, 0) logit into 0/0.
MIN_TEMPERATURE = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class SamplingParams:
    """`temperature == 0` means greedy, else it is finite and >= `MIN_TEMPERATURE`; `top_k == 0` and
    `top_p == 1.0` disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0 or 0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 or finite and >= {MIN_TEMPERATURE:.3g}, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_logits(logits_BV: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits with everything outside top-k / top-p set to -inf."""
    logits_BV = logits_BV.float() / params.temperature
    if params.top_k:
        k = min(params.top_k, logits_BV.shape[-1])
        kth_B1 = torch.topk(logits_BV, k, dim=-1).values[..., -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    if params.top_p < 1.0:
        sorted_BV, order_BV = torch.sort(logits_BV, dim=-1, descending=False)
        cumulative_BV = sorted_BV.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted_BV = cumulative_BV <= 1.0 - params.top_p
        remove_sorted_BV[..., -1] = False  # always keep the most likely token
        remove_BV = remove_sorted_BV.scatter(-1, order_BV, remove_sorted_BV)
        logits_BV = logits_BV.masked_fill(remove_BV, float("-inf"))
    return logits_BV


def select_next(logits_BV: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row, int64 [B]."""
    if params.greedy:
        return logits_BV.argmax(dim=-1)
    logits_BV = logits_BV.float()
    shifted_BV = logits_BV - logits_BV.amax(dim=-1, keepdim=True)
    probs_BV = filter_logits(shifted_BV, params).softmax(dim=-1)
    return torch.multinomial(probs_BV, num_samples=1, generator=generator).squeeze(-1)


def make_generator(params: SamplingParams) -> torch.Generator | None:
    if params.greedy or params.seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed)
    return generator

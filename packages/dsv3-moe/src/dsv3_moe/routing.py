"""Group-limited expert selection as one pure function, `route`, shared by `GroupLimitedRouter` and any
backend router (an NxDI router calls it on its own fp32 logits and gets exactly the same choice).

Semantics (docs/numerics.md sections 6 and 7, transformers 4.57 `DeepseekV3TopkRouter` / `DeepseekV2MoEGate`):

- `noaux_tc` (V3, R1, Kimi-K2, Moonlight): scores `s = sigmoid(logits)`; the correction bias is added for
  *selection only* (`s' = s + bias`); group score = sum of the top-2 `s'` of each group; the best
  `topk_group` groups are kept and the other experts masked with **-inf** (transformers 4.57 and NxD mask with
  0.0, which picks masked experts once fewer than `top_k` unmasked experts have `s' > 0`, e.g. with negative
  biases; DeepSeek's own code, torchtitan and transformers 5.x use -inf); top `num_experts_per_tok` of the
  masked `s'`; weights = the unbiased `s` of those experts, divided by `sum + 1e-20` when `norm_topk_prob`
  (transformers' epsilon), times `routed_scaling_factor`.
- `greedy` (V2-Lite): softmax scores, plain top-k (groups ignored, as transformers does), times the scaling.
- `group_limited_greedy` (V2): softmax scores, group score = the group max, best `topk_group` groups, top-k.
  For both softmax methods `norm_topk_prob` is **not** applied: transformers 4.57 and 5.x store it and never
  use it (DeepSeek's V2 remote code would normalize; we match transformers).
- Groups of one expert: the top-2 sum does not exist. transformers and DeepSeek's code both fail inside
  `topk(2)` (a RuntimeError); `RoutingParams` refuses such a `noaux_tc` config up front with a ValueError.
- When `topk_group == n_group` every group is kept and the group step is skipped (it cannot change the
  choice), which makes `n_group = 1` (Kimi-K2, Moonlight) a plain biased top-k.

Indices come back sorted by decreasing selection score (`s'` for `noaux_tc`, `s` otherwise); transformers
returns them unsorted, so compare choices as sets.

Shape legend: T tokens, E routed experts, G groups, K experts per token (`num_experts_per_tok`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv3_config import ModelConfig
from dsv3_config.model_config import TopkMethod

NORM_EPS = 1e-20  # transformers 4.57 modeling_deepseek_v3.py:150 (`topk_weights.sum(...) + 1e-20`)


@dataclass(frozen=True)
class RoutingParams:
    """The config fields that routing reads, validated; `RoutingParams.from_config(cfg)` builds it."""

    topk_method: TopkMethod
    n_routed_experts: int
    n_group: int
    topk_group: int
    num_experts_per_tok: int
    norm_topk_prob: bool
    routed_scaling_factor: float

    def __post_init__(self) -> None:
        if self.n_routed_experts % self.n_group:
            raise ValueError(f"n_routed_experts ({self.n_routed_experts}) is not divisible by n_group ({self.n_group})")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"topk_group ({self.topk_group}) must be in 1..n_group ({self.n_group})")
        candidates = self.n_routed_experts if self.topk_method == "greedy" else self.topk_group * self.experts_per_group
        if not 1 <= self.num_experts_per_tok <= candidates:
            raise ValueError(f"num_experts_per_tok ({self.num_experts_per_tok}) must be in 1..{candidates}")
        if self.topk_method == "noaux_tc" and self.experts_per_group < 2:
            raise ValueError(
                f"noaux_tc scores a group by the sum of its top-2 experts, but n_routed_experts "
                f"({self.n_routed_experts}) / n_group ({self.n_group}) gives {self.experts_per_group} per group"
            )

    @property
    def experts_per_group(self) -> int:
        return self.n_routed_experts // self.n_group

    @property
    def uses_correction_bias(self) -> bool:
        return self.topk_method == "noaux_tc"

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> RoutingParams:
        return cls(
            topk_method=cfg.topk_method,
            n_routed_experts=cfg.n_routed_experts,
            n_group=cfg.n_group,
            topk_group=cfg.topk_group,
            num_experts_per_tok=cfg.num_experts_per_tok,
            norm_topk_prob=cfg.norm_topk_prob,
            routed_scaling_factor=cfg.routed_scaling_factor,
        )


def route(
    logits_TE: torch.Tensor, correction_bias_E: torch.Tensor | None, params: RoutingParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(topk_idx_TK int64, topk_weight_TK fp32)` from fp32 router logits (see the module docstring)."""
    if logits_TE.dtype != torch.float32:
        raise ValueError(f"router logits must be float32, got {logits_TE.dtype}")
    if logits_TE.dim() != 2 or logits_TE.shape[1] != params.n_routed_experts:
        raise ValueError(f"router logits must be [T, {params.n_routed_experts}], got {tuple(logits_TE.shape)}")
    if params.uses_correction_bias != (correction_bias_E is not None):
        raise ValueError(f"topk_method {params.topk_method!r} needs correction bias: {params.uses_correction_bias}")
    if correction_bias_E is not None:  # noaux_tc, checked above
        scores_TE = logits_TE.sigmoid()
        choice_TE = scores_TE + correction_bias_E.to(torch.float32)
    else:
        scores_TE = logits_TE.softmax(dim=-1)
        choice_TE = scores_TE
    if params.topk_method != "greedy" and params.topk_group < params.n_group:
        choice_TE = _mask_to_top_groups(choice_TE, params)
    topk_idx_TK = choice_TE.topk(params.num_experts_per_tok, dim=-1, sorted=True).indices
    topk_weight_TK = scores_TE.gather(1, topk_idx_TK)
    if params.topk_method == "noaux_tc" and params.norm_topk_prob:
        topk_weight_TK = topk_weight_TK / (topk_weight_TK.sum(dim=-1, keepdim=True) + NORM_EPS)
    return topk_idx_TK, topk_weight_TK * params.routed_scaling_factor


def _mask_to_top_groups(choice_TE: torch.Tensor, params: RoutingParams) -> torch.Tensor:
    """`choice_TE` with every expert outside the best `topk_group` groups set to -inf."""
    num_tokens = choice_TE.shape[0]
    grouped_TGX = choice_TE.view(num_tokens, params.n_group, params.experts_per_group)
    if params.topk_method == "noaux_tc":
        group_score_TG = grouped_TGX.topk(2, dim=-1).values.sum(dim=-1)
    else:
        group_score_TG = grouped_TGX.amax(dim=-1)
    top_groups_TG = group_score_TG.topk(params.topk_group, dim=-1, sorted=False).indices
    keep_TG = torch.zeros_like(group_score_TG, dtype=torch.bool).scatter_(1, top_groups_TG, True)
    keep_TE = keep_TG.unsqueeze(-1).expand_as(grouped_TGX).reshape(num_tokens, params.n_routed_experts)
    return choice_TE.masked_fill(~keep_TE, float("-inf"))

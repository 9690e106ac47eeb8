"""Configurations and builders shared by the dsv3-moe suites.

Every case is a variant of the `tiny` preset (hidden 64, 16 experts, moe_intermediate 48):
- `tiny`: V3 `noaux_tc`, 4 groups of 4, top-2 groups, top-4 experts, one shared expert.
- `kimi_like`: `noaux_tc` with one group (Kimi-K2, Moonlight), top-6.
- `v2_lite_like`: softmax `greedy`, one group, top-6, two shared experts, scaling 1.0 (V2-Lite).
- `v2_group_limited`: softmax `group_limited_greedy`, 4 groups, top-2 groups, top-3, scaling 16 (V2).
- `topk_fills_groups`: `noaux_tc` with top-8 = every expert of the 2 kept groups.
"""

from __future__ import annotations

import torch

from dsv3_config import ModelConfig, preset
from dsv3_moe import DeepseekMoE, build_deepseek_moe

TINY = preset("tiny")
_V2 = {"model_type": "deepseek_v2", "scoring_func": "softmax", "norm_topk_prob": False}

CONFIGS: dict[str, ModelConfig] = {
    "tiny": TINY,
    "kimi_like": TINY.replace(model_type="kimi_k2", n_group=1, topk_group=1, num_experts_per_tok=6),
    "v2_lite_like": TINY.replace(
        **_V2,
        topk_method="greedy",
        n_group=1,
        topk_group=1,
        num_experts_per_tok=6,
        n_shared_experts=2,
        routed_scaling_factor=1.0,
    ),
    "v2_group_limited": TINY.replace(
        **_V2,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        num_experts_per_tok=3,
        routed_scaling_factor=16.0,
    ),
    "topk_fills_groups": TINY.replace(num_experts_per_tok=8),
}


def build_moe(cfg: ModelConfig) -> DeepseekMoE:
    return build_deepseek_moe(cfg).eval()


def random_hidden(cfg: ModelConfig, *, seed: int, shape: tuple[int, ...] = (2, 7)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, cfg.hidden_size, generator=generator)


def by_expert(idx_TK: torch.Tensor, weight_TK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's choices sorted by expert id (transformers returns them unsorted)."""
    sorted_idx_TK, order_TK = idx_TK.sort(dim=-1)
    return sorted_idx_TK, weight_TK.gather(1, order_TK)

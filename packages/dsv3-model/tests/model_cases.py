"""The configurations the model suite runs against transformers, and a loader from an HF module."""

from __future__ import annotations

from typing import Any

import torch

from dsv3_config import ModelConfig, preset
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.state_dict_map import fill_model
from dsv3_testing.configs import v2_lite_like


def model_configs() -> dict[str, ModelConfig]:
    tiny = preset("tiny")
    return {
        "tiny": tiny,
        # V2-Lite-like: no q_lora, softmax scores, plain greedy top-k, transformers' DeepseekV2 classes
        "v2-lite-like": v2_lite_like(),
        # Kimi-K2-like: a single expert group (n_group 1)
        "kimi-like": tiny.replace(n_group=1, topk_group=1, n_routed_experts=24, num_experts_per_tok=6),
        # the published V3 YaRN block: factor 40 over 4096 original positions
        "yarn-40": tiny.replace(
            rope_scaling={
                "type": "yarn",
                "factor": 40.0,
                "original_max_position_embeddings": 4096,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
            },
            max_position_embeddings=163840,
        ),
    }


def ours_from_hf(cfg: ModelConfig, hf_model: Any, dtype: torch.dtype = torch.float32) -> DeepseekForCausalLM:
    """Our model holding exactly the HF module's weights (router kept fp32 as ours always does)."""
    state = hf_model.state_dict()
    model = DeepseekForCausalLM(cfg).eval()
    fill_model(model, cfg, state.__getitem__, set(state))
    return model.to(dtype)

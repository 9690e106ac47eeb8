"""Test configurations shared by more than one suite (the model suite, the XLA trace)."""

from __future__ import annotations

from dsv3_config import ModelConfig, preset


def v2_lite_like() -> ModelConfig:
    """`tiny` shaped as DeepSeek-V2-Lite: no q_lora, softmax scores, plain greedy top-k, two shared
    experts, no MTP layer; transformers builds it with its DeepseekV2 classes."""
    return preset("tiny").replace(
        model_type="deepseek_v2",
        q_lora_rank=None,
        topk_method="greedy",
        scoring_func="softmax",
        n_group=1,
        topk_group=1,
        norm_topk_prob=False,
        routed_scaling_factor=1.0,
        n_shared_experts=2,
        num_nextn_predict_layers=0,
    )

"""Refuse a config whose weights cannot exist as torch tensors: more than int64-max elements in one tensor.

Each field is already at most int64's maximum; their products (an embedding is `vocab_size x hidden_size`,
stacked experts are `n_routed_experts x 2 moe_intermediate_size x hidden_size`) can still overflow what a
tensor's element count (an int64) can hold. Such a config runs nowhere, so it is refused at parse time,
naming the tensor and its fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsv3_config.field_types import INT64_MAX

if TYPE_CHECKING:
    from dsv3_config.model_config import ModelConfig


def tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """The largest tensors of the model, by name: `(shape, the fields that size it)`."""
    h, n = cfg.hidden_size, cfg.num_attention_heads
    q_in = h if cfg.q_lora_rank is None else cfg.q_lora_rank
    return {
        "embed_tokens": ((cfg.vocab_size, h), "vocab_size x hidden_size"),
        "q projection": ((n * cfg.qk_head_dim, q_in), "num_attention_heads x qk head dim x q input"),
        "kv_a_proj_with_mqa": ((cfg.latent_cache_width, h), "kv_lora_rank + qk_rope_head_dim x hidden_size"),
        "kv_b_proj": (
            (n * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank),
            "num_attention_heads x (qk_nope_head_dim + v_head_dim) x kv_lora_rank",
        ),
        "o_proj": ((h, n * cfg.v_head_dim), "hidden_size x num_attention_heads x v_head_dim"),
        "dense mlp": ((cfg.intermediate_size, h), "intermediate_size x hidden_size"),
        "stacked experts": (
            (cfg.n_routed_experts, 2 * cfg.moe_intermediate_size, h),
            "n_routed_experts x 2 moe_intermediate_size x hidden_size",
        ),
        "shared experts": (
            (max(cfg.n_shared_experts, 1) * cfg.moe_intermediate_size, h),
            "n_shared_experts x moe_intermediate_size x hidden_size",
        ),
    }


def oversized_tensors(cfg: ModelConfig) -> list[str]:
    """One problem line per tensor with more than int64-max elements (or a dimension beyond it)."""
    problems = []
    for name, (shape, fields) in tensor_shapes(cfg).items():
        numel = 1
        for dim in shape:
            numel *= dim
        if max(shape) > INT64_MAX or numel > INT64_MAX:
            problems.append(f"{name} ({fields}) would hold more than 2^63-1 elements, beyond what a tensor can index")
    return problems

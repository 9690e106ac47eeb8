"""Parameter counts from the shapes alone (what `dsv3 plan` and the docs quote).

V3: 671.03 B total (the MTP layer excluded, as transformers builds it) and 36.63 B activated per
token. "Activated" counts the weights one token's forward pass reads: every layer's attention and
norms, the dense MLPs, the router, the shared experts and `num_experts_per_tok` routed experts, the
lm_head, and one row of the embedding table (a lookup, not the whole table). DeepSeek quotes "37B";
REFERENCE_PORT.md computes 36.6 B the same way. Counting the whole embedding table gives 37.55 B.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsv3_config.model_config import LayerKind, ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    total: int
    activated: int


def attention_params(cfg: ModelConfig) -> int:
    h, n = cfg.hidden_size, cfg.num_attention_heads
    if cfg.q_lora_rank is None:
        q = h * n * cfg.qk_head_dim
    else:
        q = h * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * n * cfg.qk_head_dim
    kv = h * cfg.latent_cache_width + cfg.kv_lora_rank + cfg.kv_lora_rank * n * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    return q + kv + n * cfg.v_head_dim * h


def swiglu_params(hidden: int, intermediate: int) -> int:
    return 3 * hidden * intermediate


def count_params(cfg: ModelConfig) -> ParamCounts:
    """Total parameters and those a single token touches (all but the unselected routed experts)."""
    h = cfg.hidden_size
    lm_head = cfg.vocab_size * h
    embed_tokens = 0 if cfg.tie_word_embeddings else cfg.vocab_size * h
    total = embed_tokens + lm_head + h  # + final norm
    activated = h + lm_head + h  # one embedding row, lm_head, final norm
    expert = swiglu_params(h, cfg.moe_intermediate_size)
    for kind in cfg.layer_kinds:
        common = attention_params(cfg) + 2 * h
        if kind is LayerKind.DENSE:
            ffn_total = ffn_active = swiglu_params(h, cfg.intermediate_size)
        else:
            router = cfg.n_routed_experts * h + (cfg.n_routed_experts if cfg.topk_method == "noaux_tc" else 0)
            shared = swiglu_params(h, cfg.moe_intermediate_size * cfg.n_shared_experts) if cfg.n_shared_experts else 0
            ffn_total = router + shared + cfg.n_routed_experts * expert
            ffn_active = router + shared + cfg.num_experts_per_tok * expert
        total += common + ffn_total
        activated += common + ffn_active
    return ParamCounts(total=total, activated=activated)


def attention_linear_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """`(out_features, in_features)` of each MLA projection by its HF name (what `dsv3 plan` shards and
    FP8-blocks one matrix at a time). `attention_params` = their sum plus the latent norms' widths."""
    h, n = cfg.hidden_size, cfg.num_attention_heads
    shapes: dict[str, tuple[int, int]] = {}
    if cfg.q_lora_rank is None:
        shapes["q_proj"] = (n * cfg.qk_head_dim, h)
    else:
        shapes["q_a_proj"] = (cfg.q_lora_rank, h)
        shapes["q_b_proj"] = (n * cfg.qk_head_dim, cfg.q_lora_rank)
    shapes["kv_a_proj_with_mqa"] = (cfg.latent_cache_width, h)
    shapes["kv_b_proj"] = (n * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank)
    shapes["o_proj"] = (h, n * cfg.v_head_dim)
    return shapes


def swiglu_linear_shapes(hidden: int, intermediate: int) -> dict[str, tuple[int, int]]:
    """`(out_features, in_features)` of a SwiGLU MLP's projections; they sum to `swiglu_params`."""
    return {"gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden), "down_proj": (hidden, intermediate)}

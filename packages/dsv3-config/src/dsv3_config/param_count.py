"""Parameter counts from the shapes alone (what `dsv3 plan` and the docs quote).

V3: 671.0 B total (the MTP layer excluded, as transformers builds it), 37.x B activated per token.
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
    embeddings = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    total = activated = embeddings + h  # + final norm
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

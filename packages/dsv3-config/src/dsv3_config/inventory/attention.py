"""The tensors of one MLA module (`self_attn.`), as transformers' `DeepseekV3Attention` names them.

q LoRA or not (`q_lora_rank` null: one `q_proj`), and `attention_bias`: transformers puts a bias on
`q_a_proj`, `kv_a_proj_with_mqa` and `o_proj` only (q_b_proj, q_proj and kv_b_proj never have one).
Every Linear weight is FP8 in DeepSeek's release; norms and biases are not.
"""

from __future__ import annotations

from dsv3_config.inventory import placements as at
from dsv3_config.inventory.records import TensorDecl
from dsv3_config.model_config import ModelConfig


def _query(cfg: ModelConfig) -> list[TensorDecl]:
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    if cfg.q_lora_rank is None:
        return [TensorDecl("q_proj.weight", (heads * cfg.qk_head_dim, hidden), "attention", at.query_heads(cfg), True)]
    rank = cfg.q_lora_rank
    return [
        TensorDecl("q_a_proj.weight", (rank, hidden), "latent_projection", at.LATENT_PROJECTION, True),
        TensorDecl("q_a_layernorm.weight", (rank,), "norm"),
        TensorDecl("q_b_proj.weight", (heads * cfg.qk_head_dim, rank), "attention", at.query_heads(cfg), True),
    ]


def _biases(cfg: ModelConfig) -> list[TensorDecl]:
    """Replicated: a row-parallel projection adds its bias once, after the sum over ranks."""
    out = []
    if cfg.q_lora_rank is not None:
        out.append(TensorDecl("q_a_proj.bias", (cfg.q_lora_rank,), "latent_projection"))
    out += [
        TensorDecl("kv_a_proj_with_mqa.bias", (cfg.latent_cache_width,), "latent_projection"),
        TensorDecl("o_proj.bias", (cfg.hidden_size,), "attention"),
    ]
    return out


def attention_tensors(cfg: ModelConfig) -> tuple[TensorDecl, ...]:
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    kv_b_shape = (heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank)
    return (
        *_query(cfg),
        TensorDecl(
            "kv_a_proj_with_mqa.weight",
            (cfg.latent_cache_width, hidden),
            "latent_projection",
            at.LATENT_PROJECTION,
            True,
        ),
        TensorDecl("kv_a_layernorm.weight", (cfg.kv_lora_rank,), "norm"),
        TensorDecl("kv_b_proj.weight", kv_b_shape, "attention", at.kv_heads(cfg), True),
        TensorDecl("o_proj.weight", (hidden, heads * cfg.v_head_dim), "attention", at.output_heads(cfg), True),
        *(_biases(cfg) if cfg.attention_bias else []),
    )

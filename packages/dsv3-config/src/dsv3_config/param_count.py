"""Parameter counts from the shapes alone (what `dsv3 plan` and the docs quote).

V3: 671.03 B total (the MTP layer excluded, as transformers builds it), 684.49 B with the MTP layer as the
published checkpoint stores it (DeepSeek's "685B" also counts its 0.04 B of FP8 scale tensors), and 36.63 B
activated per token. "Activated" counts the weights one token's forward pass reads: every layer's attention and
norms, the dense MLPs, the router, the shared experts and `num_experts_per_tok` routed experts, the
lm_head, and one row of the embedding table (a lookup, not the whole table). DeepSeek quotes "37B";
docs/reference-port.md computes 36.6 B the same way. Counting the whole embedding table gives 37.55 B.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsv3_config.model_config import LayerKind, ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    """`total` and `activated` exclude the MTP layer (what transformers builds and `dsv3 generate` runs).

    `mtp` is the MTP module's own weights, `num_nextn_predict_layers` times: one decoder layer (layer index
    `num_hidden_layers`, so MoE for V3) plus `enorm`, `hnorm`, `eh_proj` (2h -> h) and `shared_head.norm`.
    `mtp_shared` is its embedding and output head: DeepSeek's README_WEIGHTS calls them shared with the main
    model, but the published checkpoint stores a copy of each under `model.layers.61.` (that is how
    DeepSeek counts 685 B = 671 B main + 14 B MTP). `total_with_mtp` counts what the checkpoint holds.
    """

    total: int
    activated: int
    mtp: int = 0
    mtp_shared: int = 0

    @property
    def total_with_mtp(self) -> int:
        return self.total + self.mtp + self.mtp_shared


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


def layer_params(cfg: ModelConfig, kind: LayerKind) -> tuple[int, int]:
    """`(total, activated)` of one decoder layer of `kind`: attention, its two norms, and the MLP or MoE."""
    h = cfg.hidden_size
    common = attention_params(cfg) + 2 * h
    if kind is LayerKind.DENSE:
        dense = swiglu_params(h, cfg.intermediate_size)
        return common + dense, common + dense
    expert = swiglu_params(h, cfg.moe_intermediate_size)
    router = cfg.n_routed_experts * h + (cfg.n_routed_experts if cfg.topk_method == "noaux_tc" else 0)
    shared = swiglu_params(h, cfg.moe_intermediate_size * cfg.n_shared_experts) if cfg.n_shared_experts else 0
    total = common + router + shared + cfg.n_routed_experts * expert
    return total, common + router + shared + cfg.num_experts_per_tok * expert


def count_params(cfg: ModelConfig) -> ParamCounts:
    """Total parameters and those a single token touches (all but the unselected routed experts), in closed
    form over the layer kinds (no loop over `num_hidden_layers`), with the MTP layer counted apart."""
    h = cfg.hidden_size
    lm_head = cfg.vocab_size * h
    embed_tokens = 0 if cfg.tie_word_embeddings else cfg.vocab_size * h
    dense_total, dense_active = layer_params(cfg, LayerKind.DENSE)
    moe_total, moe_active = layer_params(cfg, LayerKind.MOE)
    n_dense, n_moe = cfg.num_dense_layers, cfg.num_moe_layers
    total = embed_tokens + lm_head + h + n_dense * dense_total + n_moe * moe_total  # h: the final norm
    activated = h + lm_head + h + n_dense * dense_active + n_moe * moe_active  # one embedding row
    mtp_layer = layer_params(cfg, cfg.layer_kind(cfg.num_hidden_layers))[0] if cfg.num_nextn_predict_layers else 0
    per_mtp = mtp_layer + 3 * h + 2 * h * h  # + enorm, hnorm, shared_head.norm, eh_proj
    return ParamCounts(
        total=total,
        activated=activated,
        mtp=cfg.num_nextn_predict_layers * per_mtp,
        mtp_shared=cfg.num_nextn_predict_layers * 2 * cfg.vocab_size * h,
    )


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

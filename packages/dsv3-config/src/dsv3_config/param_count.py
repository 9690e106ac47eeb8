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

from dsv3_config.inventory import TensorDecl, decoder_layer_tensors, mtp_extra_tensors, outer_tensors
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


def _numel(decls: tuple[TensorDecl, ...]) -> int:
    return sum(decl.numel for decl in decls)


def layer_params(cfg: ModelConfig, kind: LayerKind) -> tuple[int, int]:
    """`(total, activated)` of one decoder layer of `kind` (the inventory's `decoder_layer_tensors`):
    activated reads `num_experts_per_tok` of the `n_routed_experts` routed experts."""
    decls = decoder_layer_tensors(cfg, kind)
    total = _numel(decls)
    routed = sum(decl.numel for decl in decls if decl.family == "experts")
    return total, total - routed + routed // cfg.n_routed_experts * cfg.num_experts_per_tok


def count_params(cfg: ModelConfig) -> ParamCounts:
    """Total parameters and those a single token touches (all but the unselected routed experts), in closed
    form over the layer kinds (no loop over `num_hidden_layers`), with the MTP layer counted apart."""
    outer = outer_tensors(cfg)
    embedding = sum(decl.numel for decl in outer if decl.family == "embedding")
    # One token reads one embedding row; a tied embedding is also read whole, as the lm_head.
    outer_active = _numel(outer) - embedding + cfg.hidden_size + (embedding if cfg.tie_word_embeddings else 0)
    dense_total, dense_active = layer_params(cfg, LayerKind.DENSE)
    moe_total, moe_active = layer_params(cfg, LayerKind.MOE)
    n_dense, n_moe = cfg.num_dense_layers, cfg.num_moe_layers
    extras = mtp_extra_tensors(cfg)
    shared = sum(decl.numel for decl in extras if decl.family in ("embedding", "lm_head"))
    mtp_layer = layer_params(cfg, cfg.layer_kind(cfg.num_hidden_layers))[0] if cfg.num_nextn_predict_layers else 0
    return ParamCounts(
        total=_numel(outer) + n_dense * dense_total + n_moe * moe_total,
        activated=outer_active + n_dense * dense_active + n_moe * moe_active,
        mtp=cfg.num_nextn_predict_layers * (mtp_layer + _numel(extras) - shared),
        mtp_shared=cfg.num_nextn_predict_layers * shared,
    )

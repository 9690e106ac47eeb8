"""Where each kind of tensor lives on the (ep, tp) mesh: the inventory's placement values, one place each.

Changing a layout is one edit here (and its tests). Units keep whole heads together; `parts=2` says the
stacked `gate_up_proj` is `[gate | up]`, each block split on its own.
"""

from __future__ import annotations

from dsv3_config.model_config import ModelConfig
from dsv3_config.shard_plan import REPLICATED, Placement, Split

TP_ROWS: Placement = (Split(dim=0, mesh_axis="tp"),)  # column-parallel: output features split
TP_COLUMNS: Placement = (Split(dim=1, mesh_axis="tp"),)  # row-parallel: input features split

# The q_a_proj and kv_a_proj_with_mqa weights: computed whole on every rank, because the latent is shared
# by all heads (their biases and the latent norms are replicated whatever this is).
LATENT_PROJECTION: Placement = REPLICATED
# The router's weight: every rank routes every token (its correction bias is replicated whatever this is).
ROUTER: Placement = REPLICATED
# Embedding split across the hidden dim (NxD `ParallelEmbedding(shard_across_embedding=True)`),
# lm_head across the vocab.
EMBEDDING: Placement = TP_COLUMNS
LM_HEAD: Placement = TP_ROWS
# Routed experts: whole experts over ep (dim 0 of both stacks), each expert's intermediate dim over tp.
EXPERTS_GATE_UP: Placement = (Split(dim=0, mesh_axis="ep"), Split(dim=1, mesh_axis="tp", parts=2))
EXPERTS_DOWN: Placement = (Split(dim=0, mesh_axis="ep"), Split(dim=2, mesh_axis="tp"))
# A SwiGLU MLP (dense layers, shared experts): column-parallel gate/up, row-parallel down.
SWIGLU: dict[str, Placement] = {"gate_proj": TP_ROWS, "up_proj": TP_ROWS, "down_proj": TP_COLUMNS}


def query_heads(cfg: ModelConfig) -> Placement:
    """q_proj / q_b_proj: output rows in whole query heads."""
    return (Split(dim=0, mesh_axis="tp", unit=cfg.qk_head_dim),)


def kv_heads(cfg: ModelConfig) -> Placement:
    """kv_b_proj: output rows in whole heads of `[k_nope | v]`."""
    return (Split(dim=0, mesh_axis="tp", unit=cfg.qk_nope_head_dim + cfg.v_head_dim),)


def output_heads(cfg: ModelConfig) -> Placement:
    """o_proj: input columns in whole value heads (each rank returns a partial sum)."""
    return (Split(dim=1, mesh_axis="tp", unit=cfg.v_head_dim),)

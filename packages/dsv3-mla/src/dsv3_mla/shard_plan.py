"""Tensor-parallel placement of MLA's parameters, by heads, as data (`dsv3_config.ShardPlan`).

Names are relative to the attention module (prefix them with `dsv3_config.prefixed`). Query and
kv_b projections split their output rows in whole heads, `o_proj` its input columns in whole heads.
The latent projections `q_a_proj` and `kv_a_proj_with_mqa` split their input columns (hidden, row-
parallel): their input is the replicated hidden state, so each rank slices its columns for free, and one
sum over ranks (an all-reduce) gives every rank the full latent, which the latent norms (replicated), the
cache and every head need. A row-parallel layer's bias (`o_proj`, the latent projections) is replicated
and added once, after the sum. Each rank then computes its heads and returns a partial `o_proj` output;
the sum over ranks is the unsharded output.
"""

from __future__ import annotations

from dsv3_config import REPLICATED, ModelConfig, ShardPlan, Split

LATENT_SPLIT = (Split(dim=1, mesh_axis="tp"),)


def mla_shard_plan(cfg: ModelConfig) -> ShardPlan:
    plan: ShardPlan = {
        "kv_a_proj_with_mqa.weight": LATENT_SPLIT,
        "kv_a_layernorm.weight": REPLICATED,
        "kv_b_proj.weight": (Split(dim=0, mesh_axis="tp", unit=cfg.qk_nope_head_dim + cfg.v_head_dim),),
        "o_proj.weight": (Split(dim=1, mesh_axis="tp", unit=cfg.v_head_dim),),
    }
    if cfg.q_lora_rank is None:
        plan["q_proj.weight"] = (Split(dim=0, mesh_axis="tp", unit=cfg.qk_head_dim),)
    else:
        plan["q_a_proj.weight"] = LATENT_SPLIT
        plan["q_a_layernorm.weight"] = REPLICATED
        plan["q_b_proj.weight"] = (Split(dim=0, mesh_axis="tp", unit=cfg.qk_head_dim),)
    if cfg.attention_bias:
        plan["kv_a_proj_with_mqa.bias"] = REPLICATED
        plan["o_proj.bias"] = REPLICATED
        if cfg.q_lora_rank is not None:
            plan["q_a_proj.bias"] = REPLICATED
    return plan

"""Tensor-parallel placement of MLA's parameters (`dsv3_config.ShardPlan`): a view of the inventory's
`attention_tensors`, where the placements are declared.

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

from dsv3_config import ModelConfig, ShardPlan
from dsv3_config.inventory import attention_tensors


def mla_shard_plan(cfg: ModelConfig) -> ShardPlan:
    return {decl.name: decl.placement for decl in attention_tensors(cfg)}

"""Tensor-parallel placement of MLA's parameters (`dsv3_config.ShardPlan`): a view of the inventory's
`attention_tensors`, where the placements are declared.

Names are relative to the attention module (prefix them with `dsv3_config.prefixed`). Query and
kv_b projections split their output rows in whole heads, `o_proj` its input columns in whole heads;
everything before the per-head split (q_a, kv_a and their norms) is replicated, because the latent
is shared by all heads. Each rank then computes its heads and returns a partial `o_proj` output; the
sum over ranks is the unsharded output (a row-parallel `o_proj` must add any bias once, after it).
"""

from __future__ import annotations

from dsv3_config import ModelConfig, ShardPlan
from dsv3_config.inventory import attention_tensors


def mla_shard_plan(cfg: ModelConfig) -> ShardPlan:
    return {decl.name: decl.placement for decl in attention_tensors(cfg)}

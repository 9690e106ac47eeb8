"""Expert- and tensor-parallel placement of the MoE block's parameters (`dsv3_config.ShardPlan`): views
of the inventory (`dsv3_config.inventory`), where the placements are declared. Names are relative to the
MLP module (prefix them with `dsv3_config.prefixed`).

- Routed experts: whole experts over `ep` (dim 0 of both stacks), and each expert's intermediate dimension
  over `tp`: `gate_up_proj` rows are `[gate | up]`, two blocks split separately (`parts=2`), so a rank gets
  the matching slices of gate and up; `down_proj` splits its input columns (dim 2).
- Shared experts and the dense MLP: column-parallel gate/up (dim 0), row-parallel down (dim 1).
- Router weight: split by expert over `tp` (dim 0, output rows): each rank computes its experts' logits as
  full-length fp32 dot products and one all-gather of the `[T, E]` fp32 logits lets every rank route every
  token with the same `route()`. The correction bias is replicated (selection needs all of it).

With this placement each rank's output is a partial sum; the sum over the (ep, tp) ranks is the unsharded
output, provided the shared experts are counted on one ep rank only (see `dsv3_moe.moe`).
"""

from __future__ import annotations

from dsv3_config import LayerKind, ModelConfig, ShardPlan
from dsv3_config.inventory import mlp_tensors, swiglu_tensors


def mlp_shard_plan() -> ShardPlan:
    """A SwiGLU MLP (dense layers, shared experts) under tensor parallelism; the placement does not depend
    on the widths (1 x 1 here)."""
    return {decl.name: decl.placement for decl in swiglu_tensors(1, 1, "dense_mlp")}


def moe_shard_plan(cfg: ModelConfig) -> ShardPlan:
    """The `DeepseekMoE` block of `cfg` (router, stacked experts, shared experts if any)."""
    return {decl.name: decl.placement for decl in mlp_tensors(cfg, LayerKind.MOE)}

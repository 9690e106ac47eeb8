"""dsv3-moe: DeepSeekMoE — the group-limited router of every family member (one pure `route` function),
grouped routed experts over stacked weights, SwiGLU shared experts and dense MLP, their shard plan, and
the stacking of HF's per-expert tensors as data."""

from dsv3_moe.expert_operands import ExpertOperands
from dsv3_moe.experts import GroupedExperts, grouped_swiglu, static_swiglu
from dsv3_moe.mlp import LinearFactory, SwiGLUMLP, default_linear_factory
from dsv3_moe.moe import DeepseekMoE, build_deepseek_moe
from dsv3_moe.router import GroupLimitedRouter
from dsv3_moe.routing import NORM_EPS, RoutingParams, route
from dsv3_moe.shard_plan import mlp_shard_plan, moe_shard_plan
from dsv3_moe.stacking import expert_slice, load_hf_moe_state_dict

__all__ = [
    "NORM_EPS",
    "DeepseekMoE",
    "ExpertOperands",
    "GroupLimitedRouter",
    "GroupedExperts",
    "LinearFactory",
    "RoutingParams",
    "SwiGLUMLP",
    "build_deepseek_moe",
    "default_linear_factory",
    "expert_slice",
    "grouped_swiglu",
    "load_hf_moe_state_dict",
    "mlp_shard_plan",
    "moe_shard_plan",
    "route",
    "static_swiglu",
]

"""Where each tensor of the converted NxDI checkpoint lives across ranks, as dsv3 shard-plan data, so
`dsv3 shard` can write the per-rank files NxDI loads (`weights/tp{rank}_sharded_checkpoint.safetensors`)
with `dsv3_weights.shard_tensor` instead of NxD's whole-checkpoint `shard_checkpoint`.

It restates the layer packages' plans under the NxDI key names of `state_dict.py`: attention is
`dsv3_mla.mla_shard_plan`, dense MLPs and shared experts `dsv3_moe.mlp_shard_plan`; the routed experts
follow `dsv3_moe.moe_shard_plan` transposed to NxD's stacks (`gate_up_proj` [E, H, 2I]: tp splits
dim 2 in two parts, gate and up; `down_proj` [E, I, H]: tp splits dim 1); the embedding is split
across the hidden dim (`ParallelEmbedding(shard_across_embedding=True)`), `lm_head` across the vocab,
and each `SPMDRank` vector `arange(world)` gives every rank its own index. NxD's slicing of the same
modules (`partition_dim`/`stride`, NxD `trace/trace.py:737-825`) must agree; the CPU suite checks it
key for key and bit for bit against NxD's `shard_checkpoint`.

Expert parallelism (`moe_ep_degree > 1`) is not covered: NxD adds `local_expert_indices` in its
preshard hook from XLA process-group meshes.
"""

from __future__ import annotations

from dsv3_config import REPLICATED, LayerKind, ModelConfig, ShardPlan, Split, prefixed
from dsv3_mla import mla_shard_plan
from dsv3_model.neuron.state_dict import EXPERTS, SPMD_RANK_KEYS
from dsv3_moe import mlp_shard_plan

TP_VECTOR = (Split(dim=0, mesh_axis="tp"),)


def nxdi_shard_plan(cfg: ModelConfig) -> ShardPlan:
    """Placement of every key `convert_hf_to_neuron_state_dict` produces."""
    plan: ShardPlan = {
        "embed_tokens.weight": (Split(dim=1, mesh_axis="tp"),),
        "norm.weight": REPLICATED,
        "lm_head.weight": (Split(dim=0, mesh_axis="tp"),),
        "rank_util.rank": TP_VECTOR,
    }
    for layer in range(cfg.num_hidden_layers):
        prefix = f"layers.{layer}."
        plan.update(prefixed(mla_shard_plan(cfg), f"{prefix}self_attn."))
        plan[f"{prefix}input_layernorm.weight"] = REPLICATED
        plan[f"{prefix}post_attention_layernorm.weight"] = REPLICATED
        if cfg.layer_kind(layer) == LayerKind.DENSE:
            plan.update(prefixed(mlp_shard_plan(), f"{prefix}mlp."))
            continue
        plan[f"{prefix}mlp.router.linear_router.weight"] = REPLICATED
        if cfg.topk_method == "noaux_tc":
            plan[f"{prefix}mlp.router.e_score_correction_bias"] = REPLICATED
        plan[f"{prefix}{EXPERTS}.gate_up_proj.weight"] = (Split(dim=2, mesh_axis="tp", parts=2),)
        plan[f"{prefix}{EXPERTS}.down_proj.weight"] = (Split(dim=1, mesh_axis="tp"),)
        plan.update({f"{prefix}{key}": TP_VECTOR for key in SPMD_RANK_KEYS})
        if cfg.n_shared_experts:
            plan.update(prefixed(mlp_shard_plan(), f"{prefix}mlp.shared_experts."))
    return plan

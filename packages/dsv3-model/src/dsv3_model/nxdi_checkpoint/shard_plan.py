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

Expert parallelism (NeuronConfig `moe_ep_degree` = ep, `moe_tp_degree` = tp / ep): every tensor but the
routed-expert stacks stays split over all tp ranks; the stacks are split over ep along the expert dim
and over moe_tp along the intermediate dim. NxD builds the MoE groups with its own
`initialize_model_parallel(moe_tp, ep)` mesh (NxD `modules/moe/moe_process_group.py:12-47`, `parallel_layers/
parallel_state.py:616-624`: ranks reshaped [ep, moe_tp], moe_tp contiguous), so rank r holds expert block
`r // moe_tp` and intermediate slice `r % moe_tp` (NxD `trace/trace.py:773-816`), and each MoE layer gets a
`spmd_rank.local_expert_indices` row naming its experts (NxD `expert_mlps_v2.py:1501-1530`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsv3_config import REPLICATED, LayerKind, MeshCoordinate, ModelConfig, ShardPlan, Split, prefixed
from dsv3_mla import mla_shard_plan
from dsv3_model.nxdi_checkpoint.state_dict import EXPERTS, LOCAL_EXPERTS_KEY, SPMD_RANK_KEYS
from dsv3_moe import mlp_shard_plan

TP_VECTOR = (Split(dim=0, mesh_axis="tp"),)
# NxD groups 32 contiguous ranks differently on trn2 once 64 ranks run at logical core size 2 (its
# `get_logic_chosen` LOGIC2, NxD parallel_state.py:341-385); the expert placement below is LOGIC1's.
NXD_LOGIC2_GROUP = 32
NXD_LOGIC2_WORLD = 64
ROUTED_EXPERT_STACKS = (f"{EXPERTS}.gate_up_proj.weight", f"{EXPERTS}.down_proj.weight")
EXPERT_BLOCKS = Split(dim=0, mesh_axis="ep")


@dataclass(frozen=True)
class NxdiRanks:
    """The ranks of an NxDI model: `tp_degree` of them (the world), the routed experts split over
    `ep_degree` groups of `moe_tp = tp_degree // ep_degree` ranks."""

    tp_degree: int
    ep_degree: int = 1

    def __post_init__(self) -> None:
        if self.tp_degree < 1 or self.ep_degree < 1:
            raise ValueError(f"tp_degree and ep_degree must be >= 1, got {self.tp_degree} and {self.ep_degree}")
        if self.tp_degree % self.ep_degree:
            raise ValueError(f"ep_degree={self.ep_degree} does not divide tp_degree={self.tp_degree}")
        if self.ep_degree > 1 and self.moe_tp == NXD_LOGIC2_GROUP and self.tp_degree >= NXD_LOGIC2_WORLD:
            raise ValueError(
                f"tp_degree={self.tp_degree} with ep_degree={self.ep_degree} (moe_tp 32): NxD orders these expert "
                "groups differently on trn2 (LOGIC2), which dsv3 shard does not reproduce; use another ep_degree"
            )

    @property
    def moe_tp(self) -> int:
        return self.tp_degree // self.ep_degree

    def coordinate(self, name: str, rank: int) -> MeshCoordinate:
        """Rank `rank`'s position for tensor `name`: routed-expert stacks on the MoE mesh, the rest on tp."""
        if not 0 <= rank < self.tp_degree:
            raise ValueError(f"rank {rank} outside tp_degree={self.tp_degree}")
        if name.endswith(ROUTED_EXPERT_STACKS):
            return MeshCoordinate(
                tp_rank=rank % self.moe_tp, tp_size=self.moe_tp, ep_rank=rank // self.moe_tp, ep_size=self.ep_degree
            )
        return MeshCoordinate(tp_rank=rank, tp_size=self.tp_degree)


def nxdi_shard_plan(cfg: ModelConfig, ep_degree: int = 1) -> ShardPlan:
    """Placement of every key `convert_hf_to_neuron_state_dict` produces (for `NxdiRanks.coordinate`)."""
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
        plan[f"{prefix}{EXPERTS}.gate_up_proj.weight"] = (EXPERT_BLOCKS, Split(dim=2, mesh_axis="tp", parts=2))
        plan[f"{prefix}{EXPERTS}.down_proj.weight"] = (EXPERT_BLOCKS, Split(dim=1, mesh_axis="tp"))
        plan.update({f"{prefix}{key}": TP_VECTOR for key in SPMD_RANK_KEYS})
        if ep_degree > 1:
            plan[f"{prefix}{LOCAL_EXPERTS_KEY}"] = TP_VECTOR
        if cfg.n_shared_experts:
            plan.update(prefixed(mlp_shard_plan(), f"{prefix}mlp.shared_experts."))
    return plan

"""Where each tensor of the converted NxDI checkpoint lives across ranks, as dsv3 shard-plan data, so
`dsv3 shard` can write the per-rank files NxDI loads (`weights/tp{rank}_sharded_checkpoint.safetensors`)
with `dsv3_weights.shard_tensor` instead of NxD's whole-checkpoint `shard_checkpoint`.

It is a view: each weight's placement is `key_map.nxdi_tensors`' (the layer packages' plans, the inventory's
for the embedding, norms and lm_head, permuted to NxD's expert stacks: `gate_up_proj` [E, H, 2I] splits dim 2
in two parts, gate and up, `down_proj` [E, I, H] dim 1); each `SPMDRank` vector `arange(world)` gives every
rank its own index. NxD's slicing of the same modules (`partition_dim`/`stride`, NxD `trace/trace.py:737-825`)
must agree; the CPU suite checks it key for key and bit for bit against NxD's `shard_checkpoint`.

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

from dsv3_config import MeshCoordinate, ModelConfig, ShardPlan, Split
from dsv3_config.inventory.fp8_experts import Fp8ExpertGrid
from dsv3_model.nxdi_checkpoint.key_map import EXPERT_SCALE_KEYS, EXPERT_STACK_KEYS, nxdi_tensors
from dsv3_model.nxdi_checkpoint.neuron_tensors import Kind, NeuronTarget, neuron_tensors

TP_VECTOR = (Split(dim=0, mesh_axis="tp"),)
# NxD groups 32 contiguous ranks differently on trn2 once 64 ranks run at logical core size 2 (its
# `get_logic_chosen` LOGIC2, NxD parallel_state.py:341-385); the expert placement below is LOGIC1's.
NXD_LOGIC2_GROUP = 32
NXD_LOGIC2_WORLD = 64


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
        if name.endswith(EXPERT_STACK_KEYS + EXPERT_SCALE_KEYS):
            return MeshCoordinate(
                tp_rank=rank % self.moe_tp, tp_size=self.moe_tp, ep_rank=rank // self.moe_tp, ep_size=self.ep_degree
            )
        return MeshCoordinate(tp_rank=rank, tp_size=self.tp_degree)


def nxdi_shard_plan(
    cfg: ModelConfig, ep_degree: int = 1, expert_grid: Fp8ExpertGrid | None = None, fp8_linears: bool = False
) -> ShardPlan:
    """Placement of every key `convert_hf_to_neuron_state_dict` produces (for `NxdiRanks.coordinate`); with
    `expert_grid` (and `fp8_linears`), each FP8 stack's (linear's) scale grid is split along its weight's dim
    (NxD marks it so, `quantization/quantization_layers.py:284-291`), one scale block per device block. A
    linear's split drops the weight's head `unit`: the heads divide evenly over tp (`Dsv3InferenceConfig`), so
    each rank's rows are whole heads and whole device blocks either way."""
    plan: ShardPlan = {tensor.name: tensor.placement for tensor in nxdi_tensors(cfg)}
    target = NeuronTarget.for_keys(ep_degree, expert_grid, fp8_linears)
    for tensor in neuron_tensors(cfg, target):
        if tensor.kind == Kind.EXPERT_SCALE:
            plan[tensor.name] = plan[tensor.name.removesuffix("scale") + "weight"]
        elif tensor.kind == Kind.LINEAR_SCALE:
            weight = plan[tensor.name.removesuffix("scale") + "weight"]
            plan[tensor.name] = tuple(Split(dim=split.dim, mesh_axis=split.mesh_axis) for split in weight)
        elif tensor.kind not in (Kind.COPY, Kind.STACKED):
            plan[tensor.name] = TP_VECTOR
    return plan

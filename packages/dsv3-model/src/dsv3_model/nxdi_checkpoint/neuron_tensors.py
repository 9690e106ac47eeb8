"""The converted NxDI checkpoint as data: one `NeuronTensor` per key `NeuronDsv3Model` loads (its full shape,
dtype, and where its values come from), for a `NeuronTarget` (dtype, mesh, which weights stay FP8).

A view of `key_map.nxdi_tensors`: each weight is its HF source (COPY, renamed at most), or a routed-expert stack
(STACKED) built from the per-expert sources; weights kept FP8 (routed experts on an `Fp8ExpertGrid`, with
`fp8_linears` the linears `dsv3_config.inventory.fp8_linears` names) follow their fp32 scale grid; the `SPMDRank`
vectors are generated. `state_dict.convert_tensor` computes the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from dsv3_config import ModelConfig
from dsv3_config.inventory import ExpertStack
from dsv3_config.inventory.fp8_experts import Block, Fp8ExpertGrid
from dsv3_config.inventory.fp8_linears import fp8_linear_block, fp8_linear_on_device
from dsv3_model.nxdi_checkpoint.fp8_experts import FP8
from dsv3_model.nxdi_checkpoint.key_map import EXPERTS, NxdiTensor, layer_and_local, nxdi_tensors, scale_key

SCALE_SUFFIX = "_scale_inv"
# SPMDRank vectors of each MoE layer (ExpertMLPsV2's own; NxD's preshard hook writes the same values,
# NxD modules/moe/expert_mlps_v2.py:197-207, :1501-1513), relative to the layer.
SPMD_RANK_KEYS = ("mlp.expert_mlps.spmd_rank.rank",)
# Under expert parallelism: [world, E / ep] int32, row r the experts rank r holds (NxD `create_spmd_ranks`).
LOCAL_EXPERTS_KEY = "mlp.expert_mlps.spmd_rank.local_expert_indices"
TP_RANKS_KEY = "rank_util.rank"


class Kind(Enum):
    COPY = "copy"  # the source tensor itself (possibly renamed)
    STACKED = "stacked"  # [E, in, out]: each expert's HF sources concatenated (rows), transposed
    EXPERT_SCALE = "expert_scale"  # [E, in / b_in, out / b_out] fp32: a FP8 stack's device block scales
    LINEAR_SCALE = "linear_scale"  # [out / b_out, in / b_in] fp32: an FP8 linear's device block scales
    TP_RANKS = "tp_ranks"  # arange(tp_degree), int32
    WORLD_RANKS = "world_ranks"  # arange(world_size), int32
    LOCAL_EXPERTS = "local_experts"  # [world, E / ep] int32: rank r holds experts of block r // (world / ep)


@dataclass(frozen=True)
class NeuronTensor:
    """One tensor of the converted checkpoint: its key, full shape, dtype, and where its values come from."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: Kind
    source: str = ""  # COPY: the HF key (no `model.`)
    stack: ExpertStack | None = None  # STACKED: the per-expert HF tensors
    num_experts: int = 0  # LOCAL_EXPERTS
    grid: Fp8ExpertGrid | None = None  # EXPERT_SCALE
    blocks: tuple[Block, Block] | None = None  # LINEAR_SCALE: (device, checkpoint) blocks, (out, in) each

    def source_keys(self) -> list[str]:
        """The HF tensors this one consumes (a scale grid reads its weight's, consumed by the weight)."""
        if self.kind == Kind.COPY:
            return [self.source]
        scale = self.kind in (Kind.EXPERT_SCALE, Kind.LINEAR_SCALE)
        return [] if self.stack is None or scale else self.stack.all_source_keys()


def _rank_vectors(cfg: ModelConfig, layer: int, ep_degree: int) -> list[tuple[str, Kind]]:
    """The SPMDRank vectors an MoE layer's experts carry."""
    prefix = f"layers.{layer}."
    out = [(f"{prefix}{key}", Kind.WORLD_RANKS) for key in SPMD_RANK_KEYS]
    if ep_degree > 1:
        out.append((f"{prefix}{LOCAL_EXPERTS_KEY}", Kind.LOCAL_EXPERTS))
    return out


@dataclass(frozen=True)
class NeuronTarget:
    """What a conversion is for: the NxDI dtype (`torch_dtype`), the mesh (tp degree, world size, expert
    parallel degree), with `expert_grid` routed experts kept FP8 on that grid, and with `fp8_linears` (weight
    format `fp8`) the other linears `dsv3_config.inventory.fp8_linears` names kept FP8 too."""

    dtype: torch.dtype
    tp_degree: int
    world_size: int
    ep_degree: int = 1
    expert_grid: Fp8ExpertGrid | None = None
    fp8_linears: bool = False

    @classmethod
    def for_keys(
        cls, ep_degree: int = 1, expert_grid: Fp8ExpertGrid | None = None, fp8_linears: bool = False
    ) -> NeuronTarget:
        """A target whose tensor names and kinds are those of every mesh with this `ep_degree` (dtype and
        shapes aside): for key listings and placements."""
        return cls(torch.float32, 1, max(1, ep_degree), ep_degree, expert_grid, fp8_linears)


def neuron_tensors(cfg: ModelConfig, target: NeuronTarget) -> list[NeuronTensor]:
    """The converted checkpoint as data, in checkpoint order (each MoE layer's rank vectors after its experts;
    each FP8 stack or linear right after its scale grid)."""
    dtype, tp_degree, world_size = target.dtype, target.tp_degree, target.world_size
    ep_degree, expert_grid = target.ep_degree, target.expert_grid
    experts = cfg.n_routed_experts
    if ep_degree > 1 and experts % ep_degree:
        raise ValueError(f"ep_degree={ep_degree} does not divide n_routed_experts={experts}")
    if ep_degree > 1 and world_size % ep_degree:
        raise ValueError(f"ep_degree={ep_degree} does not divide the world size {world_size}")
    out = [NeuronTensor(TP_RANKS_KEY, (tp_degree,), torch.int32, Kind.TP_RANKS)]
    for tensor in nxdi_tensors(cfg):
        stack = tensor.decl.stacked_from
        if stack is None:
            out += _copied(cfg, tensor, target)
            continue
        if stack.concat_dim != 0:
            raise ValueError(f"{tensor.name}: NxD stacks concatenate the expert sources by rows")
        if expert_grid is not None:
            scale = expert_grid.scale_shape(
                stack_kind(tensor.name), (tensor.shape[0], tensor.shape[1], tensor.shape[2])
            )
            scale_name = scale_key(tensor.name)
            out.append(NeuronTensor(scale_name, scale, torch.float32, Kind.EXPERT_SCALE, stack=stack, grid=expert_grid))
        out.append(
            NeuronTensor(tensor.name, tensor.shape, dtype if expert_grid is None else FP8, Kind.STACKED, stack=stack)
        )
        if tensor.name.endswith(f"{EXPERTS}.down_proj.weight"):
            for name, kind in _rank_vectors(cfg, layer_and_local(tensor.name)[0], ep_degree):
                shape = (world_size, experts // ep_degree) if kind == Kind.LOCAL_EXPERTS else (world_size,)
                out.append(NeuronTensor(name, shape, torch.int32, kind, num_experts=experts))
    return out


def _copied(cfg: ModelConfig, tensor: NxdiTensor, target: NeuronTarget) -> list[NeuronTensor]:
    """A tensor that is its source (renamed at most): in the NxDI dtype, or FP8 after its device scale grid."""
    name, source = tensor.name, tensor.decl.name
    if not (target.fp8_linears and fp8_linear_on_device(cfg, tensor.decl)):
        return [NeuronTensor(name, tensor.shape, target.dtype, Kind.COPY, source=source)]
    tp_split = next((split.dim for split in tensor.placement if split.mesh_axis == "tp"), None)
    device = fp8_linear_block(cfg, tensor.shape, tp_split, target.tp_degree)
    blocks = (device, fp8_block(cfg, source))
    grid = (tensor.shape[0] // device[0], tensor.shape[1] // device[1])
    return [
        NeuronTensor(scale_key(name), grid, torch.float32, Kind.LINEAR_SCALE, source=source, blocks=blocks),
        NeuronTensor(name, tensor.shape, FP8, Kind.COPY, source=source),
    ]


def stack_kind(name: str) -> str:
    """ "gate_up" or "down": which routed-expert stack a stack key or its scale key belongs to."""
    return "gate_up" if f"{EXPERTS}.gate_up_proj." in name else "down"


def expected_keys(
    cfg: ModelConfig, ep_degree: int = 1, expert_grid: Fp8ExpertGrid | None = None, fp8_linears: bool = False
) -> list[str]:
    """Every tensor `NeuronDsv3Model` loads from a converted checkpoint (rank keys included)."""
    target = NeuronTarget.for_keys(ep_degree, expert_grid, fp8_linears)
    return [tensor.name for tensor in neuron_tensors(cfg, target)]


def fp8_block(cfg: ModelConfig, key: str) -> tuple[int, int]:
    """The checkpoint's FP8 block (rows, cols), asked for because of FP8 tensor `key`."""
    if cfg.quantization_config is None:
        raise ValueError(f"checkpoint has FP8 tensors (e.g. {key}) but the config has no quantization_config")
    block = cfg.quantization_config.weight_block_size
    return (block[0], block[1])

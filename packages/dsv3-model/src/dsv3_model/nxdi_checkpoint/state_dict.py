"""HF checkpoint -> the key layout of `NeuronDsv3Model` (after NxDI strips the leading `model.`).

The keys, shapes and sources are `key_map.nxdi_tensors`, a view of the inventory: HF's names except the MoE router
and the routed-expert stacks, which NxD renames and stores transposed (`gate_up_proj` [E, H, 2I] with gate in `[...,
:I]`, `down_proj` [E, I, H]), stacked from the per-expert HF tensors as the inventory's `ExpertStack` says. With FP8
experts (`Fp8ExpertGrid` given) the stacks stay FP8, halved into Neuron's range, and each is preceded by its fp32
`scale` grid `[E, in / b_in, out / b_out]` (`fp8_experts.py`): the keys and layout of NxD's `QuantizedExpertFused*`
layers. MTP layers (index >= num_hidden_layers) are dropped; the `SPMDRank` vectors (`rank_util.rank`, each MoE
layer's `expert_mlps.spmd_rank.rank`, and under expert parallelism its `spmd_rank.local_expert_indices`) are added.
Floating tensors come out in the NxDI dtype (what NxDI's `checkpoint_loader_fn` and ModelBuilder's `cast_weights`
cast them to); FP8 block-quantized weights (`*.weight` + `*.weight_scale_inv`) are dequantized with dsv3-weights
straight into it, the routed experts too unless kept FP8.

One conversion serves two callers: `convert_tensor` computes any box `[start, end)` per dim of one
converted tensor from a `SourceRead` (HF name, slices -> dequantized values). NxDI's in-memory path
(`convert_hf_to_neuron_state_dict`) asks for whole tensors from the state dict, popping each source
once used (extra memory: one converted tensor); `per_rank_files` asks for one rank's slice a block of
rows (or experts) at a time, reading only those rows from the checkpoint on disk. Every expected key
is checked, because NxDI loads with `strict=False`, and unused source tensors are an error.

Shape legend: E routed experts, H hidden size, I expert intermediate size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import torch

from dsv3_config import ModelConfig
from dsv3_config.inventory import ExpertStack, unstacked
from dsv3_config.inventory.fp8_experts import Fp8ExpertGrid
from dsv3_model.nxdi_checkpoint.fp8_experts import FP8, expert_scales, rescale_for_neuron
from dsv3_model.nxdi_checkpoint.key_map import EXPERTS, expert_scale_key, layer_and_local, nxdi_tensors
from dsv3_weights import CheckpointError
from dsv3_weights.fp8 import dequantize_fp8_blocks

SCALE_SUFFIX = "_scale_inv"
# SPMDRank vectors of each MoE layer (ExpertMLPsV2's own; NxD's preshard hook writes the same values,
# NxD modules/moe/expert_mlps_v2.py:197-207, :1501-1513), relative to the layer.
SPMD_RANK_KEYS = ("mlp.expert_mlps.spmd_rank.rank",)
# Under expert parallelism: [world, E / ep] int32, row r the experts rank r holds (NxD `create_spmd_ranks`).
LOCAL_EXPERTS_KEY = "mlp.expert_mlps.spmd_rank.local_expert_indices"
TP_RANKS_KEY = "rank_util.rank"

Box = tuple[tuple[int, int], ...]  # [start, end) per dimension


class SourceRead(Protocol):
    """HF name (no `model.`), slices -> values: dequantized, or with `raw` as stored (FP8 bits, scale grids)."""

    def __call__(self, name: str, slices: tuple[slice, ...], *, raw: bool = False) -> torch.Tensor: ...


class Kind(Enum):
    COPY = "copy"  # the source tensor itself (possibly renamed)
    STACKED = "stacked"  # [E, in, out]: each expert's HF sources concatenated (rows), transposed
    EXPERT_SCALE = "expert_scale"  # [E, in / b_in, out / b_out] fp32: a FP8 stack's device block scales
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

    def source_keys(self) -> list[str]:
        """The HF tensors this one consumes (an expert scale grid reads its stack's, consumed by the stack)."""
        if self.kind == Kind.COPY:
            return [self.source]
        return [] if self.stack is None or self.kind == Kind.EXPERT_SCALE else self.stack.all_source_keys()


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
    parallel degree) and, with `expert_grid`, routed experts kept FP8 on that grid."""

    dtype: torch.dtype
    tp_degree: int
    world_size: int
    ep_degree: int = 1
    expert_grid: Fp8ExpertGrid | None = None

    @classmethod
    def for_keys(cls, ep_degree: int = 1, expert_grid: Fp8ExpertGrid | None = None) -> NeuronTarget:
        """A target whose tensor names and kinds are those of every mesh with this `ep_degree` (dtype and
        shapes aside): for key listings and placements."""
        return cls(torch.float32, 1, max(1, ep_degree), ep_degree, expert_grid)


def neuron_tensors(cfg: ModelConfig, target: NeuronTarget) -> list[NeuronTensor]:
    """The converted checkpoint as data, in checkpoint order (each MoE layer's rank vectors after its experts;
    with an expert grid, each FP8 stack right after its scale grid)."""
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
            out.append(NeuronTensor(tensor.name, tensor.shape, dtype, Kind.COPY, source=tensor.decl.name))
            continue
        if stack.concat_dim != 0:
            raise ValueError(f"{tensor.name}: NxD stacks concatenate the expert sources by rows")
        if expert_grid is not None:
            scale = expert_grid.scale_shape(
                _stack_kind(tensor.name), (tensor.shape[0], tensor.shape[1], tensor.shape[2])
            )
            scale_name = expert_scale_key(tensor.name)
            out.append(NeuronTensor(scale_name, scale, torch.float32, Kind.EXPERT_SCALE, stack=stack, grid=expert_grid))
        out.append(
            NeuronTensor(tensor.name, tensor.shape, dtype if expert_grid is None else FP8, Kind.STACKED, stack=stack)
        )
        if tensor.name.endswith(f"{EXPERTS}.down_proj.weight"):
            for name, kind in _rank_vectors(cfg, layer_and_local(tensor.name)[0], ep_degree):
                shape = (world_size, experts // ep_degree) if kind == Kind.LOCAL_EXPERTS else (world_size,)
                out.append(NeuronTensor(name, shape, torch.int32, kind, num_experts=experts))
    return out


def _stack_kind(name: str) -> str:
    """"gate_up" or "down": which routed-expert stack a stack key or its scale key belongs to."""
    return "gate_up" if f"{EXPERTS}.gate_up_proj." in name else "down"


def expected_keys(cfg: ModelConfig, ep_degree: int = 1, expert_grid: Fp8ExpertGrid | None = None) -> list[str]:
    """Every tensor `NeuronDsv3Model` loads from a converted checkpoint (rank keys included)."""
    return [tensor.name for tensor in neuron_tensors(cfg, NeuronTarget.for_keys(ep_degree, expert_grid))]


def required_sources(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The HF keys (without `model.`) the conversion reads, FP8 scales aside, with their shapes."""
    return {decl.name: decl.shape for decl in unstacked([tensor.decl for tensor in nxdi_tensors(cfg)])}


def check_shapes(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], origin: str) -> None:
    """Every source tensor shaped as the config implies (a larger one would be silently cut)."""
    for key, shape in required_sources(cfg).items():
        if shapes[key] != shape:
            raise ValueError(f"{origin} tensor {key} has shape {shapes[key]}, the config implies {shape}")


def convert_tensor(tensor: NeuronTensor, box: Box, read: SourceRead) -> torch.Tensor:
    """`converted[tensor.name][box]`, reading from the HF sources only what the box needs."""
    if len(box) != len(tensor.shape):
        raise ValueError(f"{tensor.name}: box {box} does not match shape {tensor.shape}")
    slices = tuple(slice(start, end) for start, end in box)
    if tensor.kind == Kind.COPY:
        values = read(tensor.source, slices)
    elif tensor.kind in (Kind.TP_RANKS, Kind.WORLD_RANKS):
        values = torch.arange(tensor.shape[0], dtype=torch.int32)[slices]
    elif tensor.kind == Kind.LOCAL_EXPERTS:
        world, per_rank = tensor.shape
        blocks_EP = torch.arange(tensor.num_experts, dtype=torch.int32).view(-1, per_rank)  # one row per ep rank
        values = blocks_EP.repeat_interleave(world // blocks_EP.shape[0], dim=0)[slices]
    else:
        (e0, e1), *rest = box
        shape = [end - start for start, end in box]
        fp8 = tensor.dtype == FP8  # FP8 bits gathered exactly in fp32, halved at the end
        values = torch.empty(shape, dtype=torch.float32 if fp8 else tensor.dtype)
        one_expert = _expert_scales if tensor.kind == Kind.EXPERT_SCALE else _expert
        for e in range(e0, e1):
            values[e - e0] = one_expert(tensor, e, rest, read)
        if fp8:
            values = rescale_for_neuron(values)
    return values.to(tensor.dtype).contiguous()


def _expert(tensor: NeuronTensor, e: int, box: list[tuple[int, int]], read: SourceRead) -> torch.Tensor:
    """Expert `e`'s part `[r0:r1, c0:c1]` of a stack, NxD's transpose of `cat(sources, dim=0)`: column c
    of NxD's layout is row c of the concatenation, which lies in source `c // width`."""
    assert tensor.stack is not None
    (r0, r1), (c0, c1) = box
    sources = tensor.stack.source_keys(e)
    width = tensor.shape[2] // len(sources)
    parts = []
    raw = tensor.dtype == FP8
    for k, name in enumerate(sources):
        low = k * width
        start, end = max(c0, low), min(c1, low + width)
        if start < end:
            part = read(name, (slice(start - low, end - low), slice(r0, r1)), raw=raw)
            parts.append((part.float() if raw else part).T)
    return torch.cat(parts, dim=1)


def _expert_scales(tensor: NeuronTensor, e: int, box: list[tuple[int, int]], read: SourceRead) -> torch.Tensor:
    """Expert `e`'s part of a stack's device scale grid, from its sources' whole `weight_scale_inv` grids."""
    assert tensor.stack is not None
    assert tensor.grid is not None
    sources = tensor.stack.source_keys(e)
    grids = [read(name + SCALE_SUFFIX, (slice(None), slice(None)), raw=True) for name in sources]
    stack = _stack_kind(tensor.name)
    device_block = tensor.grid.gate_up if stack == "gate_up" else tensor.grid.down
    out_per_source = tensor.shape[2] * device_block[1] // len(sources)
    (r0, r1), (c0, c1) = box
    return expert_scales(grids, device_block, tensor.grid.checkpoint_block, out_per_source, (r0, r1), (c0, c1))


def fp8_block(cfg: ModelConfig, scale_key: str) -> tuple[int, int]:
    if cfg.quantization_config is None:
        raise ValueError(f"checkpoint has FP8 scales (e.g. {scale_key}) but the config has no quantization_config")
    block = cfg.quantization_config.weight_block_size
    return (block[0], block[1])


def check_sources(cfg: ModelConfig, available: set[str], origin: str) -> None:
    """Every needed HF key present, every non-MTP key used (NxDI would silently ignore either)."""
    needed = required_sources(cfg)
    missing = sorted(set(needed) - available)
    if missing:
        raise KeyError(f"{origin} lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}")
    known = set(needed) | {key + SCALE_SUFFIX for key in needed}
    unused = sorted(key for key in available - known if layer_index(key) < cfg.num_hidden_layers)
    if unused:
        raise KeyError(f"{origin} has {len(unused)} tensors the NxDI model does not use, e.g. {unused[:5]}")


def convert_hf_to_neuron_state_dict(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Convert in place (and return) an HF DeepSeek state dict with `model.` already stripped."""
    cfg: ModelConfig = config.model_config()
    neuron_config = config.neuron_config
    target = NeuronTarget(
        neuron_config.torch_dtype,
        neuron_config.tp_degree,
        neuron_config.world_size,
        neuron_config.moe_ep_degree,
        config.fp8_expert_grid(),
    )
    return convert_state_dict(state_dict, cfg, target)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], cfg: ModelConfig, target: NeuronTarget
) -> dict[str, torch.Tensor]:
    """`convert_hf_to_neuron_state_dict` with the NxDI settings spelled out as a `NeuronTarget`."""
    dtype, expert_grid = target.dtype, target.expert_grid
    check_sources(cfg, set(state_dict), "checkpoint")
    scale_keys = [key for key in state_dict if key.endswith(SCALE_SUFFIX)]
    block = fp8_block(cfg, scale_keys[0]) if scale_keys else (1, 1)

    def read(name: str, slices: tuple[slice, ...], *, raw: bool = False) -> torch.Tensor:
        weight = state_dict[name]
        scale = state_dict.get(name + SCALE_SUFFIX)
        if scale is not None and not raw:
            weight = dequantize_fp8_blocks(weight, scale, block, dtype)
        return weight[slices]

    check_shapes(cfg, {key: tuple(tensor.shape) for key, tensor in state_dict.items()}, "checkpoint")
    tensors = neuron_tensors(cfg, target)
    if expert_grid is not None:
        check_fp8_experts(tensors, {key: tensor.dtype for key, tensor in state_dict.items()}, "checkpoint")
    converted = {}
    for tensor in tensors:
        converted[tensor.name] = convert_tensor(tensor, tuple((0, size) for size in tensor.shape), read)
        for key in tensor.source_keys():
            del state_dict[key]
            state_dict.pop(key + SCALE_SUFFIX, None)
    state_dict.clear()  # what is left: MTP layers, not part of the causal LM
    state_dict.update(converted)
    return state_dict


def check_fp8_experts(tensors: list[NeuronTensor], dtypes: dict[str, torch.dtype], origin: str) -> None:
    """Every routed-expert source of an FP8 stack stored as `float8_e4m3fn` with its block scales."""
    for tensor in tensors:
        if tensor.kind != Kind.STACKED or tensor.dtype != FP8:
            continue
        for key in tensor.source_keys():
            if dtypes[key] != FP8 or key + SCALE_SUFFIX not in dtypes:
                raise CheckpointError(
                    f"{origin} tensor {key} is {dtypes[key]}{'' if key + SCALE_SUFFIX in dtypes else ' without scales'}"
                    f": FP8 routed experts need float8_e4m3fn weights with {SCALE_SUFFIX}; hold them in BF16 "
                    "(NeuronConfig dsv3_expert_weights='bf16', dsv3 shard --expert-weights bf16)"
                )


def layer_index(key: str) -> int:
    return layer_and_local(key)[0]

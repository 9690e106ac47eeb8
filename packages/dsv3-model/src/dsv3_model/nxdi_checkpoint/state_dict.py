"""HF checkpoint -> the key layout of `NeuronDsv3Model` (after NxDI strips the leading `model.`).

The keys, shapes and sources are `key_map.nxdi_tensors`, a view of the inventory: HF's names except the MoE router
and the routed-expert stacks, which NxD renames and stores transposed (`gate_up_proj` [E, H, 2I] with gate in `[...,
:I]`, `down_proj` [E, I, H]), stacked from the per-expert HF tensors as the inventory's `ExpertStack` says. With FP8
experts (`Fp8ExpertGrid` given) the stacks stay FP8, halved into Neuron's range, and each is preceded by its fp32
`scale` grid `[E, in / b_in, out / b_out]` (`fp8_experts.py`): the keys and layout of NxD's `QuantizedExpertFused*`
layers; with `fp8_linears` (weights `fp8`) the other linears `dsv3_config.inventory.fp8_linears` names too, each FP8
`[out, in]` halved after its `scale` grid `[out / b_out, in / b_in]` (NxD's blockwise `Quantized*Parallel`). The
tensors as data (keys, shapes, kinds) are `neuron_tensors.py`'s; this module computes their values. MTP layers
(index >= num_hidden_layers) are dropped; the `SPMDRank` vectors (`rank_util.rank`, each MoE
layer's `expert_mlps.spmd_rank.rank`, and under expert parallelism its `spmd_rank.local_expert_indices`) are added.
Floating tensors come out in the NxDI dtype (what NxDI's `checkpoint_loader_fn` and ModelBuilder's `cast_weights`
cast them to); FP8 block-quantized weights (`*.weight` + `*.weight_scale_inv`) are dequantized with dsv3-weights
straight into it, except those kept FP8.

One conversion serves two callers: `convert_tensor` computes any box `[start, end)` per dim of one
converted tensor from a `SourceRead` (HF name, slices -> dequantized values). NxDI's in-memory path
(`convert_hf_to_neuron_state_dict`) asks for whole tensors from the state dict, popping each source
once used (extra memory: one converted tensor); `per_rank_files` asks for one rank's slice a block of
rows (or experts) at a time, reading only those rows from the checkpoint on disk. Every expected key
is checked, because NxDI loads with `strict=False`, and unused source tensors are an error.

Shape legend: E routed experts, H hidden size, I expert intermediate size.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from dsv3_config import ModelConfig
from dsv3_config.inventory import unstacked
from dsv3_model.nxdi_checkpoint.fp8_experts import FP8, expert_scales, linear_scales, rescale_for_neuron
from dsv3_model.nxdi_checkpoint.key_map import layer_and_local, nxdi_tensors
from dsv3_model.nxdi_checkpoint.neuron_tensors import (
    SCALE_SUFFIX,
    Kind,
    NeuronTarget,
    NeuronTensor,
    fp8_block,
    neuron_tensors,
    stack_kind,
)
from dsv3_weights import CheckpointError
from dsv3_weights.fp8 import dequantize_fp8_blocks

Box = tuple[tuple[int, int], ...]  # [start, end) per dimension


class SourceRead(Protocol):
    """HF name (no `model.`), slices -> values: dequantized, or with `raw` as stored (FP8 bits, scale grids)."""

    def __call__(self, name: str, slices: tuple[slice, ...], *, raw: bool = False) -> torch.Tensor: ...


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
    if tensor.kind == Kind.COPY and tensor.dtype == FP8:  # FP8 bits as stored, halved
        values = rescale_for_neuron(read(tensor.source, slices, raw=True).float())
    elif tensor.kind == Kind.COPY:
        values = read(tensor.source, slices)
    elif tensor.kind == Kind.LINEAR_SCALE:
        assert tensor.blocks is not None
        grid = read(tensor.source + SCALE_SUFFIX, (slice(None), slice(None)), raw=True)
        values = linear_scales(grid, *tensor.blocks, *box)
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
    stack = stack_kind(tensor.name)
    device_block = tensor.grid.gate_up if stack == "gate_up" else tensor.grid.down
    out_per_source = tensor.shape[2] * device_block[1] // len(sources)
    (r0, r1), (c0, c1) = box
    return expert_scales(grids, device_block, tensor.grid.checkpoint_block, out_per_source, (r0, r1), (c0, c1))


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
        config.fp8_linears(),
    )
    return convert_state_dict(state_dict, cfg, target)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], cfg: ModelConfig, target: NeuronTarget
) -> dict[str, torch.Tensor]:
    """`convert_hf_to_neuron_state_dict` with the NxDI settings spelled out as a `NeuronTarget`."""
    dtype = target.dtype
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
    check_fp8_sources(tensors, {key: tensor.dtype for key, tensor in state_dict.items()}, "checkpoint")
    converted = {}
    for tensor in tensors:
        converted[tensor.name] = convert_tensor(tensor, tuple((0, size) for size in tensor.shape), read)
        for key in tensor.source_keys():
            del state_dict[key]
            state_dict.pop(key + SCALE_SUFFIX, None)
    state_dict.clear()  # what is left: MTP layers, not part of the causal LM
    state_dict.update(converted)
    return state_dict


def check_fp8_sources(tensors: list[NeuronTensor], dtypes: dict[str, torch.dtype], origin: str) -> None:
    """Every source of a tensor kept FP8 (routed-expert stack or linear) stored as `float8_e4m3fn` with its
    block scales."""
    for tensor in tensors:
        if tensor.dtype != FP8:
            continue
        for key in tensor.source_keys():
            if dtypes[key] != FP8 or key + SCALE_SUFFIX not in dtypes:
                raise CheckpointError(
                    f"{origin} tensor {key} is {dtypes[key]}{'' if key + SCALE_SUFFIX in dtypes else ' without scales'}"
                    f": weights kept FP8 need float8_e4m3fn weights with {SCALE_SUFFIX}; hold them in BF16 "
                    "(NeuronConfig dsv3_weights='bf16', dsv3 shard --weights bf16)"
                )


def layer_index(key: str) -> int:
    return layer_and_local(key)[0]

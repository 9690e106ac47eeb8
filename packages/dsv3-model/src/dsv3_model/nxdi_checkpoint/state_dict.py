"""HF checkpoint -> the key layout of `NeuronDsv3Model` (after NxDI strips the leading `model.`).

Attention, norms, embeddings, `lm_head`, dense MLPs and shared experts keep HF's names. MoE layers
are renamed to NxDI's `initialize_moe_module` layout (docs/nxdi-contract.md section 8): `mlp.gate.weight`
-> `mlp.router.linear_router.weight`, `mlp.gate.e_score_correction_bias` ->
`mlp.router.e_score_correction_bias`, per-expert `gate_proj`/`up_proj` [I, H] -> one
`mlp.expert_mlps.mlp_op.gate_up_proj.weight` [E, H, 2I] (gate in `[..., :I]`), `down_proj` [H, I] ->
`mlp.expert_mlps.mlp_op.down_proj.weight` [E, I, H]. MTP layers (index >= num_hidden_layers) are
dropped; the `SPMDRank` vectors (`rank_util.rank`, each MoE layer's `expert_mlps.spmd_rank.rank`, and under
expert parallelism its `spmd_rank.local_expert_indices`) are added. Floating tensors come out in the NxDI
dtype (what NxDI's `checkpoint_loader_fn` and ModelBuilder's `cast_weights` cast them to); FP8
block-quantized weights (`*.weight` + `*.weight_scale_inv`) are dequantized with dsv3-weights straight into it.

One conversion serves two callers: `convert_tensor` computes any box `[start, end)` per dim of one
converted tensor from a `SourceRead` (HF name, slices -> dequantized values). NxDI's in-memory path
(`convert_hf_to_neuron_state_dict`) asks for whole tensors from the state dict, popping each source
once used (extra memory: one converted tensor); `per_rank_files` asks for one rank's slice a block of
rows (or experts) at a time, reading only those rows from the checkpoint on disk. Every expected key
is checked, because NxDI loads with `strict=False`, and unused source tensors are an error.

Shape legend: E routed experts, H hidden size, I expert intermediate size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from dsv3_config import LayerKind, ModelConfig
from dsv3_mla import mla_shard_plan
from dsv3_weights.fp8 import dequantize_fp8_blocks

SCALE_SUFFIX = "_scale_inv"

EXPERTS = "mlp.expert_mlps.mlp_op"
# SPMDRank vectors of each MoE layer (ExpertMLPsV2's own; NxD's preshard hook writes the same values,
# NxD modules/moe/expert_mlps_v2.py:197-207, :1501-1513), relative to the layer.
SPMD_RANK_KEYS = ("mlp.expert_mlps.spmd_rank.rank",)
# Under expert parallelism: [world, E / ep] int32, row r the experts rank r holds (NxD `create_spmd_ranks`).
LOCAL_EXPERTS_KEY = "mlp.expert_mlps.spmd_rank.local_expert_indices"

Box = tuple[tuple[int, int], ...]  # [start, end) per dimension
SourceRead = Callable[[str, tuple[slice, ...]], torch.Tensor]  # HF name (no `model.`), slices -> values


class Kind(Enum):
    COPY = "copy"  # the source tensor itself (possibly renamed)
    GATE_UP = "gate_up"  # [E, H, 2I] from each expert's gate_proj / up_proj [I, H]
    DOWN = "down"  # [E, I, H] from each expert's down_proj [H, I]
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
    source: str  # COPY: the HF key; GATE_UP/DOWN: the layer's `layers.{i}.mlp.experts.`; ranks: ""
    num_experts: int = 0

    def source_keys(self) -> list[str]:
        if self.kind == Kind.COPY:
            return [self.source]
        if self.kind not in (Kind.GATE_UP, Kind.DOWN):  # computed from the layout alone
            return []
        projs = ("gate_proj", "up_proj") if self.kind == Kind.GATE_UP else ("down_proj",)
        return [f"{self.source}{e}.{proj}.weight" for e in range(self.num_experts) for proj in projs]


def _key_sources(cfg: ModelConfig, ep_degree: int) -> list[tuple[str, Kind, str]]:
    """(converted key, kind, source) of every tensor `NeuronDsv3Model` loads, in checkpoint order."""
    copy = Kind.COPY
    out = [(name, copy, name) for name in ("embed_tokens.weight", "norm.weight", "lm_head.weight")]
    out.append(("rank_util.rank", Kind.TP_RANKS, ""))
    attention = [f"self_attn.{name}" for name in mla_shard_plan(cfg)]
    mlp = [f"{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
    for layer in range(cfg.num_hidden_layers):
        prefix = f"layers.{layer}."
        names = [*attention, "input_layernorm.weight", "post_attention_layernorm.weight"]
        if cfg.layer_kind(layer) == LayerKind.DENSE:
            out += [(f"{prefix}{name}", copy, f"{prefix}{name}") for name in [*names, *(f"mlp.{p}" for p in mlp)]]
            continue
        if cfg.n_shared_experts:
            names += [f"mlp.shared_experts.{p}" for p in mlp]
        out += [(f"{prefix}{name}", copy, f"{prefix}{name}") for name in names]
        out.append((f"{prefix}mlp.router.linear_router.weight", copy, f"{prefix}mlp.gate.weight"))
        if cfg.topk_method == "noaux_tc":
            out.append(
                (f"{prefix}mlp.router.e_score_correction_bias", copy, f"{prefix}mlp.gate.e_score_correction_bias")
            )
        out.append((f"{prefix}{EXPERTS}.gate_up_proj.weight", Kind.GATE_UP, f"{prefix}mlp.experts."))
        out.append((f"{prefix}{EXPERTS}.down_proj.weight", Kind.DOWN, f"{prefix}mlp.experts."))
        out += [(f"{prefix}{key}", Kind.WORLD_RANKS, "") for key in SPMD_RANK_KEYS]
        if ep_degree > 1:
            out.append((f"{prefix}{LOCAL_EXPERTS_KEY}", Kind.LOCAL_EXPERTS, ""))
    return out


def expected_keys(cfg: ModelConfig, ep_degree: int = 1) -> list[str]:
    """Every tensor `NeuronDsv3Model` loads from a converted checkpoint (rank keys included)."""
    return [name for name, _, _ in _key_sources(cfg, ep_degree)]


def required_sources(cfg: ModelConfig) -> list[str]:
    """The HF keys (without `model.`) the conversion reads, FP8 scales aside."""
    return [key for tensor in neuron_tensors(cfg, torch.float32, 1, 1, _no_shape) for key in tensor.source_keys()]


def _no_shape(name: str) -> tuple[int, ...]:
    return ()


def neuron_tensors(
    cfg: ModelConfig,
    dtype: torch.dtype,
    tp_degree: int,
    world_size: int,
    source_shape: Callable[[str], tuple[int, ...]],
    ep_degree: int = 1,
) -> list[NeuronTensor]:
    """The converted checkpoint as data; `source_shape(hf_key)` gives a copied tensor's shape."""
    hidden, inter, experts = cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts
    out = []
    for name, kind, source in _key_sources(cfg, ep_degree):
        if kind == Kind.COPY:
            out.append(NeuronTensor(name, source_shape(source), dtype, kind, source))
        elif kind == Kind.GATE_UP:
            out.append(NeuronTensor(name, (experts, hidden, 2 * inter), dtype, kind, source, experts))
        elif kind == Kind.DOWN:
            out.append(NeuronTensor(name, (experts, inter, hidden), dtype, kind, source, experts))
        elif kind == Kind.LOCAL_EXPERTS:
            if experts % ep_degree:
                raise ValueError(f"ep_degree={ep_degree} does not divide n_routed_experts={experts}")
            if world_size % ep_degree:
                raise ValueError(f"ep_degree={ep_degree} does not divide the world size {world_size}")
            out.append(NeuronTensor(name, (world_size, experts // ep_degree), torch.int32, kind, source, experts))
        else:
            size = tp_degree if kind == Kind.TP_RANKS else world_size
            out.append(NeuronTensor(name, (size,), torch.int32, kind, source))
    return out


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
        values = torch.empty(shape, dtype=tensor.dtype)
        for e in range(e0, e1):
            values[e - e0] = _expert(tensor, e, rest, read)
    return values.to(tensor.dtype).contiguous()


def _expert(tensor: NeuronTensor, e: int, box: list[tuple[int, int]], read: SourceRead) -> torch.Tensor:
    """Expert `e`'s part of a GATE_UP [H, 2I] or DOWN [I, H] stack, as the transposed HF weights."""
    (r0, r1), (c0, c1) = box
    prefix = f"{tensor.source}{e}."
    if tensor.kind == Kind.DOWN:
        return read(f"{prefix}down_proj.weight", (slice(c0, c1), slice(r0, r1))).T
    inter = tensor.shape[2] // 2
    parts = []
    for proj, low in (("gate_proj", 0), ("up_proj", inter)):
        start, end = max(c0, low), min(c1, low + inter)
        if start < end:
            parts.append(read(f"{prefix}{proj}.weight", (slice(start - low, end - low), slice(r0, r1))).T)
    return torch.cat(parts, dim=1)


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
    return convert_state_dict(
        state_dict,
        cfg,
        neuron_config.torch_dtype,
        neuron_config.tp_degree,
        neuron_config.world_size,
        ep_degree=neuron_config.moe_ep_degree,
    )


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    cfg: ModelConfig,
    dtype: torch.dtype,
    tp_degree: int,
    world_size: int,
    *,
    ep_degree: int = 1,
) -> dict[str, torch.Tensor]:
    """`convert_hf_to_neuron_state_dict` with the NxDI settings spelled out."""
    check_sources(cfg, set(state_dict), "checkpoint")
    scale_keys = [key for key in state_dict if key.endswith(SCALE_SUFFIX)]
    block = fp8_block(cfg, scale_keys[0]) if scale_keys else (1, 1)

    def read(name: str, slices: tuple[slice, ...]) -> torch.Tensor:
        weight = state_dict[name]
        scale = state_dict.get(name + SCALE_SUFFIX)
        if scale is not None:
            weight = dequantize_fp8_blocks(weight, scale, block, dtype)
        return weight[slices]

    tensors = neuron_tensors(cfg, dtype, tp_degree, world_size, lambda key: tuple(state_dict[key].shape), ep_degree)
    converted = {}
    for tensor in tensors:
        converted[tensor.name] = convert_tensor(tensor, tuple((0, size) for size in tensor.shape), read)
        for key in tensor.source_keys():
            del state_dict[key]
            state_dict.pop(key + SCALE_SUFFIX, None)
    state_dict.clear()  # what is left: MTP layers, not part of the causal LM
    state_dict.update(converted)
    return state_dict


def layer_index(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if parts[0] == "layers" and len(parts) > 1 and parts[1].isdigit() else -1

"""Weight bytes each rank holds, one module family at a time: a view of the inventory.

Every tensor of one decoder layer of each kind (`dsv3_config.inventory.decoder_layer_tensors`), the
embedding, final norm and lm_head (`outer_tensors`) is counted with its shape, its inventory family and its
tp split (the `Split` over `tp` its placement names; routed experts also over `ep`), in a format: BF16 = 2
bytes a parameter, fp32 = 4, FP8 = 1 byte a parameter plus one fp32 `weight_scale_inv` per
`weight_block_size` block of the rank's slice (a slice thinner than a block still needs that block's
scale). A split dimension is divided by its group size, padded up when it does not divide. Vectors (norm
weights, biases, the router's fp32 correction bias) are replicated and form `norms_and_biases`.

FP8 linears other than the routed experts (`Layout.dense_format` "fp8") are the ones the adapter holds FP8
(`dsv3_config.inventory.fp8_linears`: not `kv_b_proj`), with the scales of its device grid; the routed experts
hold the scales of `dsv3_config.inventory.fp8_experts`' grid. Both grids are the checkpoint's where a rank's
slice cuts no block; a BF16 checkpoint planned as FP8 counts 128 x 128 blocks cut by rank.

Two placements are the layout's, not the inventory's: `Layout.replicated_latent_projections` false shards
`q_a_proj` / `kv_a_proj_with_mqa` row-parallel (dim 1, their input) and `Layout.router_sharded` splits the
router by expert (dim 0), the layout issue 15 builds; the inventory holds what the adapter builds today.
The multi-token-prediction layer is not counted: neither layout serves it (`count_params` excludes it too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dsv3_config import DeploymentConfig, LayerKind, ModelConfig
from dsv3_config.inventory import TensorDecl, decoder_layer_tensors, outer_tensors, per_expert
from dsv3_config.inventory.fp8_experts import fp8_expert_scales_per_rank
from dsv3_config.inventory.fp8_linears import fp8_linear_on_device, fp8_linear_scales_per_rank
from dsv3_plan.layouts import Layout

Format = Literal["bf16", "fp8", "fp32"]
Shape = tuple[int, int]
FAMILIES = (
    "attention",
    "latent_projections",
    "router",
    "experts",
    "shared_experts",
    "dense_mlp",
    "embeddings",
    "lm_head",
    "norms_and_biases",
)
_FAMILY = {"latent_projection": "latent_projections", "embedding": "embeddings", "norm": "norms_and_biases"}
LATENT_ROW_PARALLEL = 1  # the input (hidden) dim of q_a_proj / kv_a_proj_with_mqa
ROUTER_BY_EXPERT = 0


@dataclass(frozen=True)
class FamilyWeights:
    name: str
    placement: str  # "replicated", "tp" or "ep x tp"
    params_per_rank: int
    bytes_per_rank: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def block_size(cfg: ModelConfig) -> Shape:
    """The checkpoint's FP8 block, or DeepSeek's 128 x 128 for a BF16 checkpoint quantized to plan."""
    if cfg.quantization_config is None:
        return (128, 128)
    rows, cols = cfg.quantization_config.weight_block_size
    return (rows, cols)


def matrix_on_rank(shape: Shape, split_dim: int | None, parts: int, fmt: Format, block: Shape) -> tuple[int, int]:
    """`(params, bytes)` of one rank's slice of an `(out, in)` matrix split `parts` ways along `split_dim`."""
    rows, cols = shape
    if split_dim == 0:
        rows = _ceil_div(rows, parts)
    elif split_dim == 1:
        cols = _ceil_div(cols, parts)
    params = rows * cols
    if fmt == "fp8":
        return params, params + 4 * _ceil_div(rows, block[0]) * _ceil_div(cols, block[1])
    return params, params * (4 if fmt == "fp32" else 2)


def _total(items: Iterable[tuple[int, int]], times: int = 1) -> tuple[int, int]:
    params = nbytes = 0
    for p, b in items:
        params, nbytes = params + p, nbytes + b
    return params * times, nbytes * times


def family_of(decl: TensorDecl) -> str:
    return "norms_and_biases" if len(decl.shape) == 1 else _FAMILY.get(decl.family, decl.family)


def _tp_split(decl: TensorDecl, layout: Layout) -> int | None:
    if decl.family == "latent_projection":
        return None if layout.replicated_latent_projections else LATENT_ROW_PARALLEL
    if decl.family == "router":
        return ROUTER_BY_EXPERT if layout.router_sharded else None
    return next((split.dim for split in decl.placement if split.mesh_axis == "tp"), None)


def _format(cfg: ModelConfig, decl: TensorDecl, layout: Layout) -> Format:
    """The layout's format for its matrices (FP8 other linears only where the adapter holds them FP8); vectors
    as the checkpoint stores them (the router's correction bias fp32)."""
    if decl.family == "router" and len(decl.shape) == 2:
        return layout.router_format
    if decl.fp8 and decl.family == "experts":
        return layout.expert_format
    if decl.fp8 and fp8_linear_on_device(cfg, decl):
        return layout.dense_format
    return "fp32" if decl.dtype == "float32" else "bf16"


def routed_expert_on_rank(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig) -> tuple[int, int]:
    """One routed expert of one layer, as one rank of its `moe_tp` group holds it: the per-expert
    checkpoint matrices of each stack, each split over `moe_tp` as the stack's placement says. FP8 experts of
    an FP8 checkpoint hold the scales of the adapter's grid (`dsv3_config.inventory.fp8_experts`, the record
    the adapter builds its NxD layers from), not the checkpoint's grid cut by rank."""
    stacks = [decl for decl in decoder_layer_tensors(cfg, LayerKind.MOE) if decl.stacked_from is not None]
    sources = [source for stack in stacks for source in per_expert(stack, 0)]
    params, nbytes = _total(
        matrix_on_rank(
            (s.shape[0], s.shape[1]), _tp_split(s, layout), dep.moe_tp, _format(cfg, s, layout), block_size(cfg)
        )
        for s in sources
    )
    on_device_grid = cfg.quantization_config is not None and cfg.moe_intermediate_size % dep.moe_tp == 0
    if layout.expert_format == "fp8" and on_device_grid:
        nbytes = params + 4 * fp8_expert_scales_per_rank(cfg, dep.moe_tp)
    return params, nbytes


def _on_rank(cfg: ModelConfig, decl: TensorDecl, layout: Layout, dep: DeploymentConfig) -> tuple[int, int]:
    """One non-expert tensor on one rank (vectors replicated); an FP8 linear of an FP8 checkpoint with the
    adapter's device grid (`fp8_linears`) where its split divides."""
    fmt, split = _format(cfg, decl, layout), _tp_split(decl, layout)
    if len(decl.shape) == 1:
        return decl.shape[0], decl.shape[0] * (4 if fmt == "fp32" else 2)
    params, nbytes = matrix_on_rank((decl.shape[0], decl.shape[1]), split, dep.tp, fmt, block_size(cfg))
    if fmt == "fp8" and cfg.quantization_config is not None and (split is None or decl.shape[split] % dep.tp == 0):
        nbytes = params + 4 * fp8_linear_scales_per_rank(cfg, decl.shape, split, dep.tp)
    return params, nbytes


def family_weights(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig) -> tuple[FamilyWeights, ...]:
    """Per-rank weights of every family in `FAMILIES` order (zero-sized families included)."""
    sums = {family: (0, 0) for family in FAMILIES}
    placements = {family: "tp" for family in FAMILIES}  # what a family absent from `cfg` would be
    placements["norms_and_biases"] = "replicated"

    def add(decl: TensorDecl, times: int, counted: tuple[int, int]) -> None:
        family = family_of(decl)
        params, nbytes = sums[family]
        sums[family] = (params + times * counted[0], nbytes + times * counted[1])
        if family == "experts":
            placements[family] = "ep x tp" if dep.ep > 1 else "tp"
        elif len(decl.shape) > 1:
            placements[family] = "replicated" if _tp_split(decl, layout) is None else "tp"

    for kind, layers in ((LayerKind.DENSE, cfg.num_dense_layers), (LayerKind.MOE, cfg.num_moe_layers)):
        for decl in decoder_layer_tensors(cfg, kind) if layers else ():
            if decl.stacked_from is None:
                add(decl, layers, _on_rank(cfg, decl, layout, dep))
        if kind is LayerKind.MOE and layers:
            experts = next(d for d in decoder_layer_tensors(cfg, kind) if d.family == "experts")
            add(experts, layers * (cfg.n_routed_experts // dep.ep), routed_expert_on_rank(cfg, layout, dep))
    for decl in outer_tensors(cfg):
        add(decl, 1, _on_rank(cfg, decl, layout, dep))
    return tuple(FamilyWeights(family, placements[family], *sums[family]) for family in FAMILIES)

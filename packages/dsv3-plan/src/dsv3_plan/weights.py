"""Weight bytes each rank holds, one module family at a time.

Each family is a list of matrices `(out_features, in_features)` taken from `dsv3_config.param_count`
(`attention_linear_shapes`, `swiglu_linear_shapes`), a split (which dimension is cut into how many
parts, padded up when it does not divide) and a format: BF16 = 2 bytes a parameter, fp32 = 4, FP8 = 1 byte
a parameter plus one fp32 `weight_scale_inv` per `weight_block_size` block of the rank's slice (a slice
thinner than a block still needs that block's scale). The multi-token-prediction layer is not counted:
neither layout serves it (`count_params` excludes it too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dsv3_config import DeploymentConfig, LayerKind, ModelConfig
from dsv3_config.param_count import attention_linear_shapes, swiglu_linear_shapes
from dsv3_plan.layouts import Layout

Format = Literal["bf16", "fp8", "fp32"]
Shape = tuple[int, int]
LATENT_PROJECTIONS = ("q_a_proj", "kv_a_proj_with_mqa")
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


def swiglu_on_rank(hidden: int, intermediate: int, parts: int, fmt: Format, block: Shape) -> tuple[int, int]:
    """Column-parallel gate/up (split out), row-parallel down (split in)."""
    shapes = swiglu_linear_shapes(hidden, intermediate)
    return _total(
        matrix_on_rank(shape, 1 if name == "down_proj" else 0, parts, fmt, block) for name, shape in shapes.items()
    )


def routed_expert_on_rank(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig) -> tuple[int, int]:
    """One routed expert of one layer, as one rank of its `moe_tp` group holds it."""
    return swiglu_on_rank(cfg.hidden_size, cfg.moe_intermediate_size, dep.moe_tp, layout.expert_format, block_size(cfg))


def _attention(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, latent: bool) -> tuple[int, int]:
    split = {"q_proj": 0, "q_b_proj": 0, "kv_b_proj": 0, "o_proj": 1, "q_a_proj": 1, "kv_a_proj_with_mqa": 1}
    parts = 1 if latent and layout.replicated_latent_projections else dep.tp
    chosen = [(n, s) for n, s in attention_linear_shapes(cfg).items() if (n in LATENT_PROJECTIONS) == latent]
    one_layer = _total(matrix_on_rank(s, split[n], parts, layout.dense_format, block_size(cfg)) for n, s in chosen)
    return _total([one_layer], cfg.num_hidden_layers)


def _router(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, moe_layers: int) -> tuple[int, int]:
    """The gate weight only; its fp32 `e_score_correction_bias` is counted with the norms (replicated)."""
    parts = dep.tp if layout.router_sharded else 1
    weight = matrix_on_rank((cfg.n_routed_experts, cfg.hidden_size), 0, parts, layout.router_format, (1, 1))
    return _total([weight], moe_layers)


def family_weights(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig) -> tuple[FamilyWeights, ...]:
    """Per-rank weights of every family in `FAMILIES` order (zero-sized families included)."""
    kinds = cfg.layer_kinds
    moe_layers, dense_layers = kinds.count(LayerKind.MOE), kinds.count(LayerKind.DENSE)
    h, block, tp = cfg.hidden_size, block_size(cfg), dep.tp
    experts = routed_expert_on_rank(cfg, layout, dep)
    shared = swiglu_on_rank(h, cfg.moe_intermediate_size * cfg.n_shared_experts, tp, layout.dense_format, block)
    dense = swiglu_on_rank(h, cfg.intermediate_size, tp, layout.dense_format, block)
    vocab = matrix_on_rank((cfg.vocab_size, h), 0, tp, "bf16", block)
    norm_widths = 2 * h + (cfg.q_lora_rank or 0) + cfg.kv_lora_rank
    norms = norm_widths * len(kinds) + h  # BF16 RMSNorm weights, final norm included
    biases = moe_layers * cfg.n_routed_experts if cfg.topk_method == "noaux_tc" else 0  # fp32
    latent_placement = "replicated" if layout.replicated_latent_projections else "tp"
    rows: list[tuple[str, str, tuple[int, int]]] = [
        ("attention", "tp", _attention(cfg, layout, dep, latent=False)),
        ("latent_projections", latent_placement, _attention(cfg, layout, dep, latent=True)),
        ("router", "tp" if layout.router_sharded else "replicated", _router(cfg, layout, dep, moe_layers)),
        ("experts", "ep x tp" if dep.ep > 1 else "tp", _total([experts], moe_layers * cfg.n_routed_experts // dep.ep)),
        ("shared_experts", "tp", _total([shared] if cfg.n_shared_experts else [], moe_layers)),
        ("dense_mlp", "tp", _total([dense], dense_layers)),
        ("embeddings", "tp", (0, 0) if cfg.tie_word_embeddings else vocab),
        ("lm_head", "tp", vocab),
        ("norms_and_biases", "replicated", (norms + biases, 2 * norms + 4 * biases)),
    ]
    return tuple(FamilyWeights(name, placement, p, b) for name, placement, (p, b) in rows)

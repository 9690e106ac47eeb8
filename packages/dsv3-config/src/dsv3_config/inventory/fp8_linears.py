"""The other FP8 linears on device (weight format `fp8`): which of the checkpoint's block-quantized linears
besides the routed experts the adapter holds in FP8, and the block each gets, so the adapter, `dsv3 shard`
and the planner read one record.

Held FP8 (NxD's blockwise `QuantizedColumnParallel` / `QuantizedRowParallel`, weight `[out, in]` as in the
checkpoint, one fp32 scale per `(b_out, b_in)` block of each rank's slice): `q_b_proj` (or `q_proj`), `o_proj`,
the dense-layer MLP and the shared experts' gate/up/down, and the latent projections `q_a_proj` /
`kv_a_proj_with_mqa` (row-parallel, their partial products summed by the adapter's one latent all-reduce).
Kept dense:
- `kv_b_proj`: the absorbed attention reads its weight as a matrix (`kv_b_weight_HXc`), not through a forward;
- the latent projections of a config with `attention_bias`: NxD's quantized row-parallel layer adds its bias to
  each rank's partial product (it has no `skip_bias_add`), which the latent all-reduce would then sum tp times.
The router, embeddings, lm_head and norms are not quantized in the checkpoint; MTP layers are not served.

The device block is the checkpoint block cut down to divide the rank's slice, `gcd(block, slice)` along each
dim (as `fp8_experts.py` does for the expert stacks): it lies inside one checkpoint block and one rank, so
repeating each checkpoint scale over the device blocks it covers is exact for any tp and any edge block.
"""

from __future__ import annotations

from math import gcd

from dsv3_config.inventory.fp8_experts import Block
from dsv3_config.inventory.records import TensorDecl
from dsv3_config.model_config import ModelConfig

DENSE_ON_DEVICE = ("kv_b_proj.weight",)  # read as a matrix by the absorbed attention


def fp8_linear_on_device(cfg: ModelConfig, decl: TensorDecl) -> bool:
    """Whether weight format `fp8` holds `decl` (any name prefix) in FP8: a block-quantized linear of a served
    decoder layer other than the routed experts and the ones kept dense (module docstring)."""
    if not decl.fp8 or decl.stacked_from is not None or decl.mtp or decl.family == "experts":
        return False
    if decl.name.endswith(DENSE_ON_DEVICE):
        return False
    return not (decl.family == "latent_projection" and cfg.attention_bias)


def fp8_linear_block(cfg: ModelConfig, shape: tuple[int, ...], split_dim: int | None, tp: int) -> Block:
    """The device block `(b_out, b_in)` of an `[out, in]` FP8 linear split over `tp` along `split_dim` (None:
    whole on every rank)."""
    if cfg.quantization_config is None:
        raise ValueError("FP8 linears need a checkpoint config with an FP8 quantization_config")
    out, cols = rank_slice(shape, split_dim, tp)
    block_rows, block_cols = cfg.quantization_config.weight_block_size
    return (gcd(block_rows, out), gcd(block_cols, cols))


def rank_slice(shape: tuple[int, ...], split_dim: int | None, tp: int) -> tuple[int, int]:
    """One rank's `(out, in)` of an `[out, in]` matrix split evenly over `tp` along `split_dim`."""
    out, cols = shape
    if split_dim is not None and (out, cols)[split_dim] % tp:
        raise ValueError(f"FP8 linear of shape {tuple(shape)}: dim {split_dim} is not divisible by tp={tp}")
    return (out // tp, cols) if split_dim == 0 else (out, cols // tp) if split_dim == 1 else (out, cols)


def fp8_linear_scales_per_rank(cfg: ModelConfig, shape: tuple[int, ...], split_dim: int | None, tp: int) -> int:
    """fp32 scales one rank holds for such a linear: one per device block of its slice."""
    b_out, b_in = fp8_linear_block(cfg, shape, split_dim, tp)
    out, cols = rank_slice(shape, split_dim, tp)
    return (out // b_out) * (cols // b_in)

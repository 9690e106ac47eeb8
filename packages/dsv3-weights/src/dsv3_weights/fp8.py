"""FP8 e4m3 block (de)quantization of DeepSeek-V3 checkpoints (docs/numerics.md section 9).

`W = fp8.float() * weight_scale_inv[i // br, j // bc]` for a weight `[M, N]` with a scale grid
`[ceil(M / br), ceil(N / bc)]`; the last row/column block may be partial (V3's `kv_a_proj_with_mqa` is
576 x 7168 with 128 x 128 blocks: 4.5 row blocks). The product is computed in fp32, then cast, a block of
rows at a time so temporary memory stays near `rows_per_chunk * N * 8` bytes whatever the tensor size.

Legend: M, N weight rows/cols; R rows of a chunk; Gr, Gc scale grid rows/cols; br, bc block rows/cols.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn
CHUNK_BYTES = 64 * 1024 * 1024  # fp32 bytes of one row chunk
# fp32 bytes of the rows dequantized in one pass: small enough that the intermediates stay in the L2/L3
# caches (measured: 64 MiB passes run 2.4x slower than 1-4 MiB ones on the 2-core dev machine)
INNER_CHUNK_BYTES = 1024 * 1024

SliceReader = Callable[[tuple[slice, slice]], torch.Tensor]


def scale_grid(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    """`(ceil(M / br), ceil(N / bc))`, the `weight_scale_inv` shape of a `[M, N]` weight."""
    if len(shape) != 2:
        raise ValueError(f"FP8 block quantization applies to 2-D weights, got shape {shape}")
    return (-(-shape[0] // block[0]), -(-shape[1] // block[1]))


def chunk_rows(num_cols: int, block_rows: int) -> int:
    """Rows per chunk: a multiple of the block height with about `CHUNK_BYTES` of fp32."""
    return max(block_rows, CHUNK_BYTES // (4 * max(num_cols, 1)) // block_rows * block_rows)


def scale_rows(scale_GrGc: torch.Tensor, block_rows: int, num_rows: int) -> torch.Tensor:
    """Each row's scales `[..., R, Gc]` in fp32: row-block scales repeated `br` times, cropped (any leading
    dims; traceable)."""
    return scale_GrGc.float().repeat_interleave(block_rows, dim=-2)[..., :num_rows, :]


def _apply_scales(
    weight_RN: torch.Tensor, scale_RGc: torch.Tensor, block_cols: int, multiply: bool, out_dtype: torch.dtype
) -> torch.Tensor:
    """`weight * scale` (or `/`) per column block, computed in fp32 and rounded once into `out_dtype`.

    The last column block may be partial. Rows go `INNER_CHUNK_BYTES` of fp32 at a time: an fp32 copy
    (`_fp32_rows`), scaled in place, stored (cast) into the output.
    """
    num_rows, num_cols = weight_RN.shape
    out_RN = torch.empty((num_rows, num_cols), dtype=out_dtype)
    full_cols = num_cols // block_cols * block_cols
    blocks = full_cols // block_cols
    op_ = torch.Tensor.mul_ if multiply else torch.Tensor.div_
    step = max(1, INNER_CHUNK_BYTES // (4 * max(num_cols, 1)))
    for r0 in range(0, num_rows, step):
        r1 = min(r0 + step, num_rows)
        values_XN, scale_XGc = _fp32_rows(weight_RN[r0:r1], scale_RGc[r0:r1], multiply)
        if full_cols:
            op_(values_XN[:, :full_cols].view(r1 - r0, blocks, block_cols), scale_XGc[:, :blocks, None])
        if full_cols < num_cols:
            op_(values_XN[:, full_cols:], scale_XGc[:, -1:])
        out_RN[r0:r1] = values_XN
    return out_RN


def _fp32_rows(weight_XN: torch.Tensor, scale_XGc: torch.Tensor, multiply: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh fp32 copy of the rows, and the scales to apply to it.

    FP8 rows to be multiplied are decoded by `_fp8_as_fp16_over_256` with the scales times 2^8:
    `(v / 2^8) * (s * 2^8)` is the same real number as `v * s` (both factors exact), rounded once, so the
    result is bit-identical to `weight.float() * scale`. Anything else (and FP8 holding NaN) is cast.
    """
    if multiply and weight_XN.dtype == FP8_DTYPE:
        fp16_XN = _fp8_as_fp16_over_256(weight_XN)
        if fp16_XN is not None:
            return fp16_XN.float(), scale_XGc * 256.0
    return weight_XN.to(torch.float32, copy=True), scale_XGc


def _fp8_as_fp16_over_256(weight_fp8: torch.Tensor) -> torch.Tensor | None:
    """The FP8 e4m3fn values divided by 2^8, as float16, by moving bits; None if any value is NaN.

    Why: torch's float8 -> float32 cast is scalar code (measured 0.65 G values/s on 2 cores, 8x slower
    than an fp32 copy), while integer ops and float16 -> float32 are vectorized. e4m3fn is
    `s eeee mmm` with exponent bias 7; float16 is `s eeeee mmmmmmmmmm` with bias 15. Placing `eeee mmm`
    at float16 bits 7..13 gives an exponent field `0eeee`, so every e4m3fn value (normal or subnormal)
    reads as itself times 2^(7 - 15), exactly. e4m3fn has no infinities; its NaN (`s 1111 111`) would
    read as a finite number, hence the check.
    """
    signed_RN = weight_fp8.view(torch.int8).to(torch.int16)  # sign-extended: negative iff the sign bit is set
    magnitude_RN = signed_RN & 0x7F
    if bool((magnitude_RN == 0x7F).any()):
        return None
    magnitude_RN <<= 7
    magnitude_RN |= signed_RN & -0x8000
    return magnitude_RN.view(torch.float16)


def _check_grid(weight_MN: torch.Tensor, scale_GrGc: torch.Tensor, block: tuple[int, int]) -> None:
    expected = scale_grid(tuple(weight_MN.shape), block)
    if tuple(scale_GrGc.shape) != expected:
        raise ValueError(
            f"weight_scale_inv shape {tuple(scale_GrGc.shape)} does not match weight {tuple(weight_MN.shape)} "
            f"with block {block}: expected {expected}"
        )


def dequantize_fp8_chunks(
    weight_MN: torch.Tensor, scale_GrGc: torch.Tensor, block: tuple[int, int], out_dtype: torch.dtype
) -> Iterator[torch.Tensor]:
    """The dequantized weight as consecutive row chunks (each `[R, N]` of `out_dtype`)."""
    _check_grid(weight_MN, scale_GrGc, block)
    num_rows, num_cols = weight_MN.shape
    step = chunk_rows(num_cols, block[0])
    for r0 in range(0, num_rows, step):
        r1 = min(r0 + step, num_rows)
        scale_RGc = scale_rows(scale_GrGc[r0 // block[0] : -(-r1 // block[0])], block[0], r1 - r0)
        yield _apply_scales(weight_MN[r0:r1], scale_RGc, block[1], multiply=True, out_dtype=out_dtype)


def dequantize_fp8_blocks(
    weight_fp8: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int],
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`weight_fp8 * scale_inv` per `block`, exact on partial edge blocks, computed in fp32, cast to `out_dtype`.

    `out` (shape of the weight, dtype `out_dtype`) receives the values instead of a new tensor: a caller
    that dequantizes per matmul (FP8 weights kept resident) writes into a view of a larger buffer, e.g.
    the gate and up halves of one fused expert matrix, each with its own scale grid."""
    if out is not None and (tuple(out.shape) != tuple(weight_fp8.shape) or out.dtype != out_dtype):
        raise ValueError(f"out must be {tuple(weight_fp8.shape)} {out_dtype}, got {tuple(out.shape)} {out.dtype}")
    out_MN = torch.empty(tuple(weight_fp8.shape), dtype=out_dtype) if out is None else out
    r0 = 0
    for chunk_RN in dequantize_fp8_chunks(weight_fp8, scale_inv, block, out_dtype):
        out_MN[r0 : r0 + chunk_RN.shape[0]] = chunk_RN
        r0 += chunk_RN.shape[0]
    return out_MN


def dequantize_traceable_f32(
    weight_MN: torch.Tensor, scale_GrGc: torch.Tensor, block: tuple[int, int], rounded_to: torch.dtype
) -> torch.Tensor:
    """`weight * scale` per block over the last two dims (any leading dims), rounded to `rounded_to`'s
    precision and held in fp32, with static shapes and no host sync: for compiled and traced steps, which
    fuse it into their products (`round_values_traceable` says why fp32). Each value is the exactly rounded
    fp32 product of the same two factors as `dequantize_fp8_blocks`', hence the same value. The FP8 values
    are `weight.float()`, which a compiled CPU step decodes by bit operations (`fp8_values_traceable`)."""
    scale_MGc = scale_rows(scale_GrGc, block[0], weight_MN.shape[-2])
    return dequantize_rows_traceable_f32(weight_MN, scale_MGc, block[1], rounded_to)


def dequantize_rows_traceable_f32(
    weight_MN: torch.Tensor, scale_MGc: torch.Tensor, block_cols: int, rounded_to: torch.dtype
) -> torch.Tensor:
    """`dequantize_traceable_f32` with the scales already given per row (`[..., M, Gc]` fp32): for weights
    whose rows come from several grids (a stacked `[gate | up]`), whose per-row scales are small to join."""
    scale_MN = scale_MGc.repeat_interleave(block_cols, dim=-1)[..., : weight_MN.shape[-1]]
    return round_values_traceable(weight_MN.float() * scale_MN, rounded_to)


def round_values_traceable(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 `values` rounded to `dtype`'s precision and kept in fp32 (`values.to(dtype).float()`).

    Why not that expression: in a compiled CPU loop that also holds integer operations (the FP8 decoding
    below), inductor (torch 2.13) stops vectorizing once a bf16 value appears (1 G values/s against 16 G
    with this form, dev machine). bf16 is therefore rounded in integers, to nearest even on the fp32 bits,
    which equals the conversion for every finite value; fp32 is kept; other dtypes are converted."""
    if dtype == torch.float32:
        return values
    if dtype != torch.bfloat16:
        return values.to(dtype).float()
    bits = values.view(torch.int32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).view(torch.float32)


def fp8_values_traceable(weight: torch.Tensor) -> torch.Tensor:
    """`weight.float()` for a float8_e4m3fn tensor, bit for bit for every finite value, in integer and
    bit-cast operations a compiler vectorizes, whatever the floating-point unit's denormal mode.

    Why: inductor (torch 2.13, CPU) converts e4m3 one value at a time; this form, fused into a compiled
    matrix-vector product, decoded 24-27 G values/s against 5 G on the dev machine (a compiled CPU step
    substitutes it for the conversion: `dsv3_model.row_products`). Each byte is
    `s eeee mmm`: a normal value (e > 0) is the fp32 with exponent `e - 7 + 127` and the same mantissa
    bits, i.e. `(byte & 0x7F) << 20` plus `120 << 23`; a subnormal one (e = 0) is `m * 2**-9`, computed as
    such (no fp32 denormal, so flush-to-zero modes cannot change it); the sign bit is or-ed in last. The
    two NaN codes decode to +-480 (a checkpoint's NaNs are refused when read: `validate.check_finite`)."""
    bits = weight.view(torch.uint8).to(torch.int32)
    magnitude = bits & 0x7F
    normal = ((magnitude << 20) + (120 << 23)).view(torch.float32)
    subnormal = magnitude.to(torch.float32) * 2.0**-9
    unsigned = torch.where(magnitude < 8, subnormal, normal)
    return (unsigned.view(torch.int32) | ((bits & 0x80) << 24)).view(torch.float32)


def fp8_values_keeping_denormals(weight: torch.Tensor) -> torch.Tensor:
    """`fp8_values_traceable` in two integer operations and one multiply, exact only where the
    floating-point unit keeps denormal operands (`denormals_kept()`).

    Why: `s eeee mmm` placed at fp32 bits 31 and 26..20 reads as the value times 2^-120 for every code, a
    subnormal one (e = 0) included, which lands on an fp32 denormal; the multiply by 2^120 is exact. The
    byte is sign-extended, so after the shift by 20 bit 31 holds a copy of the sign and one mask keeps it
    with the seven value bits. In a compiled one-row fp32 product (four accumulators) this decoded 43-44 G
    values/s, 39-40 with the sign masked and or-ed in separately (dev machine); with one accumulator that
    separate form had decoded 25-28 G against 16-23 G for the form above. Under flush-to-zero or
    denormals-are-zero (`torch.set_flush_denormal(True)`) the 14 subnormal codes would read as 0."""
    signed = weight.view(torch.int8).to(torch.int32)  # sign-extended: bits 31..7 are the sign
    return ((signed << 20) & _SIGN_AND_VALUE_BITS).view(torch.float32) * 2.0**120


_SIGN_AND_VALUE_BITS = -0x78100000  # 0x87F00000 as an int32: bit 31 and bits 26..20


def denormals_kept() -> bool:
    """Whether this thread's floating-point unit keeps denormal results and operands (neither
    flush-to-zero nor denormals-are-zero is set, as `torch.set_flush_denormal(True)` sets both). Python
    floats run on the same unit, so half the smallest normal double, doubled, comes back only then."""
    smallest = sys.float_info.min
    return (smallest / 2) * 2 == smallest


def block_span(start: int, end: int, block: int, size: int) -> tuple[int, int, int, int]:
    """For elements `start:end` of a dimension of `size`: the enclosing block range and element range."""
    b0, b1 = start // block, -(-end // block)
    return b0, b1, b0 * block, min(b1 * block, size)


def dequantize_fp8_slice(
    read_weight: SliceReader,
    read_scale: SliceReader,
    shape: tuple[int, int],
    block: tuple[int, int],
    rows: slice,
    cols: slice,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """`dequantize(W)[rows, cols]`, reading only the blocks the slice touches.

    `read_weight((rows, cols))` / `read_scale((rows, cols))` return those slices of the stored FP8
    weight and its `weight_scale_inv` (e.g. `functools.partial(reader.get_slice, name)`).
    """
    r0, r1, _ = rows.indices(shape[0])
    c0, c1, _ = cols.indices(shape[1])
    gr0, gr1, er0, er1 = block_span(r0, r1, block[0], shape[0])
    gc0, gc1, ec0, ec1 = block_span(c0, c1, block[1], shape[1])
    weight = read_weight((slice(er0, er1), slice(ec0, ec1)))
    scale = read_scale((slice(gr0, gr1), slice(gc0, gc1)))
    dense = dequantize_fp8_blocks(weight, scale, block, out_dtype)  # starts on a block boundary
    return dense[r0 - er0 : r1 - er0, c0 - ec0 : c1 - ec0].contiguous()


def quantize_fp8_blocks(weight_MN: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek's weight quantization: per block `scale = amax / 448`, `fp8 = W / scale` (for synthetic data).

    Returns `(fp8 [M, N], scale_inv [Gr, Gc] fp32)`; an all-zero block gets scale 1.
    """
    num_rows, num_cols = weight_MN.shape
    grid = scale_grid((num_rows, num_cols), block)
    pad_rows, pad_cols = grid[0] * block[0] - num_rows, grid[1] * block[1] - num_cols
    padded = torch.nn.functional.pad(weight_MN.float().abs(), (0, pad_cols, 0, pad_rows))
    amax_GrGc = padded.view(grid[0], block[0], grid[1], block[1]).amax(dim=(1, 3))
    scale_GrGc = torch.where(amax_GrGc > 0, amax_GrGc / FP8_MAX, torch.ones_like(amax_GrGc))
    scale_RGc = scale_rows(scale_GrGc, block[0], num_rows)
    quantized = _apply_scales(weight_MN, scale_RGc, block[1], multiply=False, out_dtype=torch.float32)
    return quantized.clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale_GrGc

"""FP8 block dequantization against a hand-written per-block loop.

Why not transformers: 4.57 refuses to load FP8 checkpoints without a GPU/XPU
(`quantizers/quantizer_finegrained_fp8.py:47-48`), and its block size is inferred as rows / scale rows,
which is wrong on partial edge blocks (docs/environment.md). The loop below is the definition from DeepSeek's
README_WEIGHTS.md: `W[i, j] = fp8[i, j] * scale_inv[i // br, j // bc]`, computed in fp32.
"""

from __future__ import annotations

import functools

import pytest
import torch

from dsv3_weights import fp8 as fp8_module
from dsv3_weights.fp8 import dequantize_fp8_blocks, dequantize_fp8_slice, quantize_fp8_blocks, scale_grid


def loop_dequantize(weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    out = torch.empty(weight.shape, dtype=torch.float32)
    for bi in range(scale.shape[0]):
        for bj in range(scale.shape[1]):
            rows = slice(bi * block[0], (bi + 1) * block[0])
            cols = slice(bj * block[1], (bj + 1) * block[1])
            out[rows, cols] = weight[rows, cols].float() * scale[bi, bj].float()
    return out


def random_fp8(shape: tuple[int, int], block: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(shape, generator=gen) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    scale = torch.rand(scale_grid(shape, block), generator=gen) * 1e-2 + 1e-4
    return weight, scale


# 72 x 100 with 16 x 16 blocks: 4.5 row blocks and 6.25 column blocks (V3's 576 x 7168 scaled down);
# also unequal block sides and a shape smaller than one block.
CASES = [((72, 100), (16, 16)), ((576 // 8, 7168 // 64), (16, 16)), ((50, 33), (8, 32)), ((5, 7), (16, 16))]


@pytest.mark.parametrize(("shape", "block"), CASES)
def test_dequantize_equals_per_block_loop(shape: tuple[int, int], block: tuple[int, int]) -> None:
    weight, scale = random_fp8(shape, block, seed=1)
    expected = loop_dequantize(weight, scale, block)
    # fp32 result: the same single multiplication per element, so bit-exact.
    torch.testing.assert_close(dequantize_fp8_blocks(weight, scale, block, torch.float32), expected, rtol=0, atol=0)
    # bf16: computed in fp32 then cast once, so equal to the cast of the fp32 reference.
    torch.testing.assert_close(
        dequantize_fp8_blocks(weight, scale, block, torch.bfloat16), expected.bfloat16(), rtol=0, atol=0
    )


def test_row_chunking_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    weight, scale = random_fp8((72, 100), (16, 16), seed=2)
    whole = dequantize_fp8_blocks(weight, scale, (16, 16), torch.float32)
    monkeypatch.setattr(fp8_module, "CHUNK_BYTES", 16 * 100 * 4)  # one block row per chunk: 5 chunks
    assert fp8_module.chunk_rows(100, 16) == 16
    torch.testing.assert_close(dequantize_fp8_blocks(weight, scale, (16, 16), torch.float32), whole, rtol=0, atol=0)


def test_wrong_scale_grid_is_refused() -> None:
    weight, scale = random_fp8((72, 100), (16, 16), seed=3)
    with pytest.raises(ValueError, match=r"weight_scale_inv shape \(4, 7\).*expected \(5, 7\)"):
        dequantize_fp8_blocks(weight, scale[:4], (16, 16))


class RecordingSource:
    """A stored tensor read through slices, remembering which element ranges were read."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.reads: list[tuple[slice, slice]] = []

    def __call__(self, slices: tuple[slice, slice]) -> torch.Tensor:
        self.reads.append(slices)
        return self.tensor[slices]


@pytest.mark.parametrize(
    ("rows", "cols"),
    [
        (slice(20, 70), slice(3, 99)),
        (slice(64, 72), slice(96, 100)),
        (slice(0, 16), slice(16, 32)),
        (slice(17, 18), slice(50, 51)),
    ],
)
def test_slice_dequantize_reads_only_touched_blocks(rows: slice, cols: slice) -> None:
    block = (16, 16)
    weight, scale = random_fp8((72, 100), block, seed=4)
    read_weight, read_scale = RecordingSource(weight), RecordingSource(scale)
    got = dequantize_fp8_slice(read_weight, read_scale, (72, 100), block, rows, cols, torch.float32)
    torch.testing.assert_close(got, loop_dequantize(weight, scale, block)[rows, cols], rtol=0, atol=0)
    ((w_rows, w_cols),) = read_weight.reads
    # Reads start at the block containing the first element and end at the block containing the last.
    assert w_rows == slice(rows.start // 16 * 16, min(72, -(-rows.stop // 16) * 16))
    assert w_cols == slice(cols.start // 16 * 16, min(100, -(-cols.stop // 16) * 16))
    ((s_rows, s_cols),) = read_scale.reads
    assert (s_rows.start, s_rows.stop) == (rows.start // 16, -(-rows.stop // 16))
    assert (s_cols.start, s_cols.stop) == (cols.start // 16, -(-cols.stop // 16))


def test_quantize_scales_are_block_amax_over_448_and_roundtrip() -> None:
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn((40, 70), generator=gen)
    fp8, scale = quantize_fp8_blocks(weight, (16, 32))
    assert fp8.dtype == torch.float8_e4m3fn
    assert scale.shape == (3, 3)
    assert scale[2, 2] == weight[32:40, 64:70].abs().max() / 448  # partial corner block
    # e4m3 has 3 mantissa bits: relative rounding error at most 2^-4 of each value (plus subnormals near 0).
    back = dequantize_fp8_blocks(fp8, scale, (16, 32), torch.float32)
    tolerance = weight.abs() * 2**-4 + functools.reduce(max, scale.flatten().tolist()) * 2**-9
    assert bool(((back - weight).abs() <= tolerance).all())


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_every_fp8_value_decodes_exactly(out_dtype: torch.dtype, with_nan: bool) -> None:
    """Every byte pattern (±0, subnormals, normals up to ±448; NaN in the second case, which takes the
    scalar cast) under scales from tiny to large: bit-identical to `fp8.float() * scale` rounded once."""
    codes = torch.arange(256, dtype=torch.uint8)
    if not with_nan:
        codes = codes[(codes & 0x7F) != 0x7F]  # the 254 non-NaN patterns: the bit-moving decode
    weight = codes.view(torch.float8_e4m3fn).repeat(4, 1)  # [4, 254 or 256]
    scale = torch.tensor([[1.0, 3.0e-7], [7.5e-3, 2.0e30]])  # 2 x 128 blocks (the second partial)
    got = dequantize_fp8_blocks(weight, scale, (2, 128), out_dtype)
    want = loop_dequantize(weight, scale, (2, 128)).to(out_dtype)
    assert int(got.isnan().sum()) == (8 if with_nan else 0)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_nan_free_decode_matches_the_scalar_cast_on_a_large_random_tensor() -> None:
    weight, scale = random_fp8((300, 700), (128, 128), seed=3)
    want = loop_dequantize(weight, scale, (128, 128)).to(torch.bfloat16)
    assert torch.equal(dequantize_fp8_blocks(weight, scale, (128, 128)), want)


def test_traceable_fp8_values_equal_torchs_conversion_bit_for_bit():
    """Every one of the 256 e4m3 codes, eagerly and compiled (the form a compiled step fuses); the two NaN
    codes are the documented exception (they decode to +-480; checkpoints with NaN are refused on read)."""
    from dsv3_weights.fp8 import fp8_values_traceable

    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    want = codes.float()
    finite = ~torch.isnan(want)
    assert int(finite.sum()) == 254
    for decode in (fp8_values_traceable, torch.compile(fp8_values_traceable, dynamic=False)):
        got = decode(codes)
        assert torch.equal(got[finite].view(torch.int32), want[finite].view(torch.int32))  # signed zeros too
        assert torch.equal(got[~finite], torch.tensor([480.0, -480.0]))


def _all_codes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 256 e4m3 codes, torch's conversion of them, the finite ones and the 14 subnormal ones."""
    codes = torch.arange(256, dtype=torch.uint8)
    want = codes.view(torch.float8_e4m3fn).float()
    subnormal = ((codes & 0x78) == 0) & ((codes & 0x07) != 0)
    return codes.view(torch.float8_e4m3fn), want, ~torch.isnan(want), subnormal


def test_denormal_keeping_fp8_values_equal_torchs_conversion_where_denormals_are_kept():
    from dsv3_weights.fp8 import denormals_kept, fp8_values_keeping_denormals

    codes, want, finite, subnormal = _all_codes()
    assert int(subnormal.sum()) == 14
    assert denormals_kept()  # torch's default floating-point mode
    got = fp8_values_keeping_denormals(codes)
    assert torch.equal(got[finite].view(torch.int32), want[finite].view(torch.int32))  # signed zeros too


def test_flush_denormal_mode_is_detected_and_changes_only_the_denormal_keeping_form():
    """Under `torch.set_flush_denormal(True)` (flush-to-zero and denormals-are-zero) the probe says so; the
    fast form then reads the 14 subnormal codes as 0 (why it needs the probe), the exact form still
    decodes all 254 finite codes."""
    from dsv3_weights.fp8 import denormals_kept, fp8_values_keeping_denormals, fp8_values_traceable

    codes, want, finite, subnormal = _all_codes()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-denormal mode")
    try:
        assert not denormals_kept()
        exact, fast = fp8_values_traceable(codes), fp8_values_keeping_denormals(codes)
    finally:
        torch.set_flush_denormal(False)
    assert denormals_kept()
    assert torch.equal(exact[finite], want[finite])
    assert torch.equal(fast[subnormal], torch.zeros(14))
    assert torch.equal(fast[finite & ~subnormal], want[finite & ~subnormal])


def test_rounding_to_bf16_in_fp32_equals_the_conversion():
    """Ties (even and odd), values next to a power of two, subnormals, negatives, large finite values."""
    from dsv3_weights.fp8 import round_values_traceable

    generator = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31 - 1, (200_000,), generator=generator, dtype=torch.int64).to(torch.int32)
    values = bits.view(torch.float32)
    edges = [0x3F808000, 0x3F818000, 0x3F7FFFFF, 0x00008000, 0x80018000 - 2**32, 0x7F7F7FFF]
    ties = torch.tensor(edges).to(torch.int32)
    values = torch.cat([values[torch.isfinite(values)], ties.view(torch.float32)])
    want = values.to(torch.bfloat16).float()
    finite = torch.isfinite(want)  # values that round up past the largest bf16 become inf in both
    got = round_values_traceable(values, torch.bfloat16)
    assert torch.equal(got[finite].view(torch.int32), want[finite].view(torch.int32))
    assert torch.equal(round_values_traceable(values, torch.float32), values)

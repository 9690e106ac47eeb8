"""The compiled decode step's one-row CPU products (`dsv3_model.row_products`), each against torch's own
product computed in fp64 (the independent reference), and the static facts that choose them.

Tolerances: fp32 inputs, fp32 accumulation over K = 512 terms of magnitude <= 1: relative error about
K * 2**-24 ~ 3e-5 at worst, 1e-5 typical; we assert 2e-5 of the largest output (atol) as
`torch.testing` does for fp32 (1.3e-6 relative would be too tight for a different summation order).
bf16 inputs: the product is exact in fp32 per term, accumulated in fp32, rounded once to bf16: within
one bf16 ulp (2**-8 relative) of the fp64 product of the same bf16 values.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from dsv3_model.loading import random_causal_lm
from dsv3_model.row_products import row_addmm, row_bmm, row_mm, row_products_backend, row_products_backend_for
from dsv3_weights.fp8 import denormals_kept, dequantize_traceable_f32

K, N = 512, 96


def _operands(dtype: torch.dtype, rows: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a_MK = torch.rand(rows, K, generator=generator).mul(2).sub(1).to(dtype)
    w_NK = torch.rand(N, K, generator=generator).mul(2).sub(1).to(dtype)
    bias_N = torch.rand(N, generator=generator).to(dtype)
    return a_MK, w_NK, bias_N


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_row_products_equal_the_fp64_product(dtype: torch.dtype) -> None:
    a_MK, w_NK, bias_N = _operands(dtype)
    want_MN = a_MK.double() @ w_NK.double().T
    got = {
        "mm": row_mm(a_MK, w_NK.T),
        "addmm": row_addmm(bias_N, a_MK, w_NK.T) - bias_N.double(),
        "bmm": row_bmm(a_MK[None].expand(3, -1, -1), w_NK.T[None].expand(3, -1, -1))[1],
    }
    for name, out in got.items():
        assert out.shape == want_MN.shape, name
        if dtype == torch.float32:
            torch.testing.assert_close(out.double(), want_MN, rtol=0, atol=2e-5 * float(want_MN.abs().max()))
        else:
            assert row_mm(a_MK, w_NK.T).dtype == torch.bfloat16
            torch.testing.assert_close(out.double(), want_MN, rtol=2**-8, atol=2**-8 * float(bias_N.abs().max()))


@pytest.mark.parametrize("outputs", [1, 3, 5])
def test_fewer_or_uneven_outputs_than_the_parts_give_the_same_product(outputs: int) -> None:
    """The N outputs are computed in up to four parts (`ROW_PRODUCT_PARTS`): N below four, or not a
    multiple of it, gives fewer or uneven parts, the same values."""
    a_MK, w_NK, _ = _operands(torch.float32)
    want_MN = a_MK.double() @ w_NK[:outputs].double().T
    got = row_mm(a_MK, w_NK[:outputs].T)
    assert got.shape == (1, outputs)
    torch.testing.assert_close(got.double(), want_MN, rtol=0, atol=2e-5 * float(want_MN.abs().max()))


@pytest.mark.parametrize("flush", [False, True], ids=["denormals-kept", "flush-denormal"])
@torch.inference_mode()
def test_the_backend_decodes_every_fp8_code_exactly_in_either_denormal_mode(flush: bool) -> None:
    """All 256 e4m3 codes times a block scale, compiled by the backend for the mode `denormals_kept()`
    reports, against the eager product of torch's own conversion; the two NaN codes are left out (a
    checkpoint's NaNs are refused when read). The counters name the form each mode compiled."""
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).reshape(2, 128)
    scale = torch.tensor([[0.75]])
    want = codes.float() * 0.75
    finite = ~want.isnan()

    def dequantize(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return dequantize_traceable_f32(w, s, (128, 128), torch.float32)

    if flush and not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-denormal mode")
    try:
        kept = denormals_kept()
        torch._dynamo.reset()
        counters = torch._dynamo.utils.counters
        counters.clear()
        got = torch.compile(dequantize, backend=row_products_backend_for(kept), fullgraph=True, dynamic=False)(
            codes, scale
        )
    finally:
        torch.set_flush_denormal(False)
    assert kept == (not flush)
    assert torch.equal(got[finite], want[finite])
    assert counters["inductor"]["dsv3_fp8_decode_exact" if flush else "dsv3_fp8_decode_fast"] == 1


def test_a_decode_started_under_flush_denormal_gets_its_own_compiled_step() -> None:
    """`compiled_step` keys its step by the denormal mode probed at the call (making a wrapper compiles
    nothing: that happens at its first call)."""
    model = random_causal_lm("tiny", seed=0, dtype=torch.float32, kernels="reference")
    kept_step = model.compiled_step()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-denormal mode")
    try:
        flushed_step = model.compiled_step()
    finally:
        torch.set_flush_denormal(False)
    assert flushed_step is not kept_step
    assert model.compiled_step() is kept_step


def test_more_rows_or_another_device_keep_inductors_lowering() -> None:
    a_MK, w_NK, bias_N = _operands(torch.float32, rows=2)
    assert row_mm(a_MK, w_NK.T) is NotImplemented
    assert row_addmm(bias_N, a_MK, w_NK.T) is NotImplemented
    assert row_bmm(a_MK[None], w_NK.T[None]) is NotImplemented
    meta = a_MK[:1].to("meta")
    assert row_mm(meta, w_NK.T.to("meta")) is NotImplemented


@torch.inference_mode()
def test_the_backend_compiles_a_linear_layer_to_the_reference_values() -> None:
    """A compiled `nn.Linear` over one row (the reduction) and over four rows (inductor's own product)."""
    layer = torch.nn.Linear(K, N)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(layer, backend=row_products_backend, fullgraph=True, dynamic=False)
    for rows in (1, 4):
        x_MK, _, _ = _operands(torch.float32, rows)
        want = x_MK.double() @ layer.weight.double().T + layer.bias.double()
        torch.testing.assert_close(compiled(x_MK).double(), want, rtol=0, atol=2e-5 * float(want.abs().max()))
    assert counters["inductor"]["dsv3_row_products"] == 1  # the one-row graph's addmm only


@torch.inference_mode()
def test_the_compiled_product_fuses_each_multiply_into_its_addition() -> None:
    """One rounding per term (a fused multiply-add), not two: terms k = 0 and k = 16 share an accumulator
    lane at any vector width up to 16 (scalar code included), `1 * -1` first, then `x * x` with
    `x = 1 + 2**-12`. `x * x - 1 = 2**-11 + 2**-24` exactly (the fp64 reference below); rounding `x * x`
    to fp32 first drops the `2**-24` (a tie, to even), which is what an unfused product would return."""
    x = 1 + 2.0**-12
    a_1K = torch.zeros(1, 32)
    w_1K = torch.zeros(1, 32)
    a_1K[0, 0], w_1K[0, 0], a_1K[0, 16], w_1K[0, 16] = 1.0, -1.0, x, x
    want = x * x - 1  # in fp64, exact
    assert want == 2.0**-11 + 2.0**-24
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, w: a @ w.T, backend=row_products_backend, fullgraph=True, dynamic=False)
    assert float(compiled(a_1K, w_1K)) == want

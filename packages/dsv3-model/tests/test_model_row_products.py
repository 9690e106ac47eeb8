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

from dsv3_model.row_products import row_addmm, row_bmm, row_mm, row_products_backend

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

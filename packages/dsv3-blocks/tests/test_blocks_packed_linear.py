"""`PackedLinear` (oneDNN-prepacked weight) against an fp64 product, and the measured choice's static rules.

Tolerances: fp32 products of K terms differ from the exact (fp64) value by at most about K * 2^-24 times
sum |x_k w_k| (any summation order); bf16 outputs are rounded once to 8 bits of mantissa after an fp32
accumulation, so within 2^-8 relative of the exact value plus the same accumulation term.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsv3_blocks.packed_linear import PackedLinear, faster_linear, packing_applies
from dsv3_blocks.timing import fastest

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")


def _exact_bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    magnitude = F.linear(x.double().abs(), weight.double().abs())
    return magnitude * x.shape[-1] * 2.0**-24


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
def test_packed_fp32_equals_the_exact_product_within_fp32_rounding(bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias)
    x = torch.randn(2, 3, 96)  # leading dimensions kept
    exact = F.linear(x.double(), linear.weight.double(), None if linear.bias is None else linear.bias.double())
    with torch.inference_mode():
        got = PackedLinear(linear)(x)
    assert got.shape == (2, 3, 40)
    assert got.dtype == torch.float32
    assert ((got.double() - exact).abs() <= _exact_bound(x, linear.weight) + 1e-6).all()


@needs_onednn
def test_packed_bf16_within_one_bf16_rounding_of_the_exact_product() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(64, 24, bias=False).to(torch.bfloat16)
    x = torch.randn(5, 64).to(torch.bfloat16)
    exact = F.linear(x.double(), linear.weight.double())
    with torch.inference_mode():
        got = PackedLinear(linear)(x)
    assert got.dtype == torch.bfloat16
    assert ((got.double() - exact).abs() <= exact.abs() * 2.0**-8 + _exact_bound(x, linear.weight)).all()


def test_packing_is_refused_by_static_facts() -> None:
    assert not packing_applies(nn.Linear(8, 8).half())  # fp16 packing needs avx512_fp16 / avx_ne_convert
    assert not packing_applies(nn.Linear(8, 8, device="meta"))
    assert not packing_applies(nn.Bilinear(4, 4, 4))  # not a plain nn.Linear
    half = nn.Linear(8, 8).half()
    assert faster_linear(half) is half


@needs_onednn
def test_faster_linear_returns_a_layer_with_the_same_product() -> None:
    torch.manual_seed(2)
    linear = nn.Linear(128, 64, bias=False)
    x = torch.randn(1, 128)
    expected = F.linear(x.double(), linear.weight.double())
    with torch.inference_mode():
        chosen = faster_linear(linear)
        got = chosen(x)
    assert isinstance(chosen, (nn.Linear, PackedLinear))
    assert ((got.double() - expected).abs() <= _exact_bound(x, linear.weight) + 1e-6).all()


@needs_onednn
def test_packed_linear_refuses_to_compile() -> None:
    packed = PackedLinear(nn.Linear(8, 8))
    with pytest.raises(torch._dynamo.exc.TorchDynamoException, match="eager kernel"):
        torch.compile(packed, fullgraph=True, backend="eager")(torch.randn(1, 8))


def test_fastest_picks_the_quicker_candidate_in_either_order() -> None:
    # 3 ms of sleep against none: the medians differ by far more than any scheduling noise.
    assert fastest({"slow": lambda: time.sleep(0.003), "quick": lambda: None}) == "quick"
    assert fastest({"quick": lambda: None, "slow": lambda: time.sleep(0.003)}) == "quick"

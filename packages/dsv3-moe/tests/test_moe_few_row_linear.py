"""`few_row_linear` against `F.linear` in float64 (the reference), and its fallbacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dsv3_moe import FEW_ROWS, FewRowLinear, few_row_linear

# Each output is a length-1024 fp32 dot product of N(0,1) terms (|y| ~ 32): two summation orders differ
# by a few ulp of the partial sums; 2e-4 is ~50 ulp at 32, far below any real error (a wrong block
# layout gives O(1) differences).
FP32_TOL = 2e-4


@pytest.mark.parametrize("x_shape", [(1, 1024), (3, 1024), (2, 1, 1024), (FEW_ROWS, 1024), (FEW_ROWS + 1, 1024)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_float64_linear(x_shape: tuple[int, ...], threads: int) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*x_shape, generator=gen)
        weight = torch.randn(512, 1024, generator=gen)
        bias = torch.randn(512, generator=gen)
        out = few_row_linear(x, weight, bias)
        reference = F.linear(x.double(), weight.double(), bias.double())
        assert out.shape == (*x_shape[:-1], 512)
        assert out.dtype == torch.float32
        assert (out.double() - reference).abs().max().item() <= FP32_TOL
    finally:
        torch.set_num_threads(previous)


def test_outputs_indivisible_by_the_blocks_fall_back_to_f_linear_exactly() -> None:
    x, weight = torch.randn(1, 64), torch.randn(7, 64)
    assert torch.equal(few_row_linear(x, weight), F.linear(x, weight))


def test_bf16_is_f_linear_exactly() -> None:
    x, weight = torch.randn(1, 256, dtype=torch.bfloat16), torch.randn(128, 256, dtype=torch.bfloat16)
    assert torch.equal(few_row_linear(x, weight), F.linear(x, weight))


def test_gradients_flow_through_the_fallback() -> None:
    layer = FewRowLinear(32, 16)
    x = torch.randn(1, 32, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, layer.weight.sum(0).detach().expand(1, 32))


def test_state_dict_is_nn_linear_s() -> None:
    assert set(FewRowLinear(8, 4).state_dict()) == {"weight", "bias"}

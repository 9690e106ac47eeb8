"""`Fp8BlockLinear`: a linear layer whose weight stays FP8 e4m3 with its block scales in memory and is
dequantized for each matmul (`dsv3 generate --weights fp8-resident`), about 1 byte per parameter
instead of 2 (bf16) or 4 (fp32), like llama.cpp's Q8_0.

Exactness: the weight of each product is `dsv3_weights.fp8.dequantize_fp8_blocks(weight,
weight_scale_inv, block, dtype)`, the very function that loading a dequantized model applies (in fp32,
then cast to the model dtype), so the product and every logit equal the dequantized model's bit for bit.
Under `torch.compile` the weight is rebuilt by `dequantize_traceable_f32` (one multiply per value of the
same two fp32 factors, rounded to the model dtype: the same values, no host sync).

State-dict names are the checkpoint's (`weight` float8_e4m3fn [out, in], `weight_scale_inv` fp32 grid,
`bias`), so a checkpoint's tensors load as stored. `.to(dtype)` changes the dtype the weight is
dequantized into (and the bias) but never the stored FP8 values or their scales (`Fp8Module`).

Shape legend: M, N weight rows / columns; Gr, Gc scale grid; br, bc block size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsv3_model.fp8_module import Fp8Module
from dsv3_weights.fp8 import dequantize_fp8_blocks, dequantize_traceable_f32, scale_grid


class Fp8BlockLinear(Fp8Module):
    """`x @ dequantize(weight, weight_scale_inv).T + bias`, the weight dequantized into the model dtype."""

    weight: torch.Tensor
    weight_scale_inv: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool, *, block: tuple[int, int]) -> None:
        super().__init__(block)
        self.in_features, self.out_features = in_features, out_features
        self.register_fp8("weight", (out_features, in_features), scale_grid((out_features, in_features), block))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self.compiled_product(x)
        return F.linear(x, self.dequantized_weight(), self.bias)

    def compiled_product(self, x: torch.Tensor) -> torch.Tensor:
        """The traced form: the model dtype's weight values held in fp32 and an fp32 product rounded once
        into the model dtype (what a bf16 `F.linear` computes: fp32 accumulation), so that a compiled
        one-row product decodes the FP8 bytes inside its loop (`dsv3_model.row_products`)."""
        weight_MN = dequantize_traceable_f32(self.weight, self.weight_scale_inv, self.block, self.products_dtype)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), weight_MN, bias).to(x.dtype)

    def dequantized_weight(self) -> torch.Tensor:
        """[out, in] in the model dtype, made for this call by the loader's own function."""
        return dequantize_fp8_blocks(self.weight, self.weight_scale_inv, self.block, self.products_dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"fp8 blocks {self.block}, products in {self.products_dtype}"
        )

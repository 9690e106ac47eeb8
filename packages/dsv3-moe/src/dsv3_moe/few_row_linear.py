"""`few_row_linear`: `x @ W^T` for decode-sized inputs (a few rows) that streams the weight on every core.

Why: a decode step multiplies one token's activations by every weight matrix once, so it is bound by
how fast the weights are read. On CPU, `F.linear` with one fp32 row becomes a single BLAS GEMV that
runs on one thread: measured on the 2-core dev machine (Zen 4), a [512, 1024] fp32 expert projection
read from DRAM streams at ~16 GB/s, the whole-model decode step at medium size spends most of its time
there. Viewing W's rows as G blocks and computing `bmm(W_blocks, x^T)` lets ATen parallelize
over the blocks: 28-44 GB/s for the same matrices (benchmarks/bench_model.py shows the model-level
effect). bf16 products are left to `F.linear` (oneDNN's bf16 GEMV beats the blocked bmm there).

The result equals `F.linear` up to fp32 summation order (each output is the same length-K dot product,
possibly accumulated in another order); everything outside the fast case is plain `F.linear`.

Shape legend: M rows (<= FEW_ROWS), K in features, N out features, G row blocks of W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows the blocked product wins (a decode step of a few sequences, or an expert's
# tokens in decode); a prefill is a real GEMM and goes to F.linear.
FEW_ROWS = 4


def row_blocks(out_features: int) -> int:
    """The most blocks (at most 4 per thread, at least 2 in all) that divide the output rows evenly; 0: none."""
    threads = torch.get_num_threads()
    for blocks in (4 * threads, 2 * threads, threads):
        if blocks >= 2 and out_features % blocks == 0:
            return blocks
    return 0


def few_row_linear(x_MK: torch.Tensor, weight_NK: torch.Tensor, bias_N: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`; for at most FEW_ROWS fp32 CPU rows, computed as a blocked bmm."""
    in_features = x_MK.shape[-1]
    rows = x_MK.numel() // in_features if in_features else 0
    out_features = weight_NK.shape[0]
    blocks = row_blocks(out_features)
    if (
        not 0 < rows <= FEW_ROWS
        or blocks == 0
        or x_MK.dtype != torch.float32
        or weight_NK.dtype != torch.float32
        or x_MK.device.type != "cpu"
        or not weight_NK.is_contiguous()
        or (torch.is_grad_enabled() and (x_MK.requires_grad or weight_NK.requires_grad))
    ):
        return F.linear(x_MK, weight_NK, bias_N)
    weight_GBK = weight_NK.view(blocks, out_features // blocks, in_features)
    x_GKM = x_MK.reshape(rows, in_features).t().expand(blocks, in_features, rows)
    out_MN = torch.bmm(weight_GBK, x_GKM).permute(2, 0, 1).reshape(*x_MK.shape[:-1], out_features)
    return out_MN if bias_N is None else out_MN + bias_N


class FewRowLinear(nn.Linear):
    """`nn.Linear` (same parameters and state dict) whose forward is `few_row_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return few_row_linear(x, self.weight, self.bias)

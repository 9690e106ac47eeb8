"""How the compiled decode step lowers its one-row matrix products on a CPU: as multiply-and-sum
reductions that inductor fuses with what feeds them, instead of calls into a BLAS library.

Why: a decode step of one row is a chain of matrix-vector products, each reading its weight once. Through
`aten.mm` on CPU each becomes an MKL or oneDNN call, which on this project's 2-core AMD EPYC reads an fp32
weight at 22 GB/s (MKL) or 65 GB/s (oneDNN, prepacked), plus a call's fixed cost on every small product. The
same product written `(x[:, :, None] * w_KN[None]).sum(1)` compiles to one vectorized C++ loop that read the
32000 x 1024 fp32 `lm_head` at 73 GB/s there, and that fuses the weight's own producers: a routed expert's
weights gathered by index (`w[idx]`) are read in place, never copied, and an FP8 weight is decoded to fp32
inside the loop (`dsv3_weights.fp8.dequantize_traceable_f32`), so each weight byte crosses the memory bus once.

Two details keep the loop at bandwidth:
- The activation is realized before the product (`_realized_f32`: a copy read through `as_strided`, which
  inductor cannot inline): otherwise inductor recomputes its producer (an RMSNorm, a SwiGLU) once per output
  feature, 32000 times for the `lm_head`, which made that loop compute-bound (42 GB/s).
- Products accumulate in fp32 whatever the dtype (as MKL and oneDNN do for bf16), rounded once at the end.

Chosen by static facts only: a CPU tensor and one row (`ROW_PRODUCT_MAX_ROWS`), so a prefill, a batch, and
every other device keep inductor's own lowering. The compile-time caches stay correct: inductor's graph cache
keys the graph after these decompositions; the AOT-autograd cache, which keys it before them, is off for
this backend (`row_products_backend`).

Shape legend: M rows, K reduced dim, N output features, B batch of matrices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

ROW_PRODUCT_MAX_ROWS = 1  # more rows would read each weight once per row
aten = torch.ops.aten


def _realized_f32(t: torch.Tensor) -> torch.Tensor:
    """`t` as a buffer of its own, in fp32: a contiguous copy, which inductor must realize because `as_strided`
    reads it through its storage. (`as_strided` straight on `t` is wrong where `t` is a view at an offset, such
    as the up half of `[gate | up]`: inductor's lowering takes a missing offset as 0.)"""
    copy = t.clone(memory_format=torch.contiguous_format)
    copy = torch.as_strided(copy, copy.shape, copy.stride(), 0)
    return copy if copy.dtype == torch.float64 else copy.float()


def _applies(rows: int, *tensors: torch.Tensor) -> bool:
    """One row on CPU; counted in dynamo's counters (`["inductor"]["dsv3_row_products"]`) where it applies."""
    applies = rows <= ROW_PRODUCT_MAX_ROWS and all(t.device.type == "cpu" for t in tensors)
    if applies:
        from torch._dynamo.utils import counters

        counters["inductor"]["dsv3_row_products"] += 1
    return applies


def _one_row_product(a_MK: torch.Tensor, b_KN: torch.Tensor) -> torch.Tensor:
    """fp32 `a @ b` as a multiply-and-sum over K."""
    return (_realized_f32(a_MK)[:, :, None] * b_KN[None].float()).sum(1)


def row_mm(a_MK: torch.Tensor, b_KN: torch.Tensor, out_dtype: torch.dtype | None = None) -> Any:
    if not _applies(a_MK.shape[0], a_MK, b_KN):
        return NotImplemented
    return _one_row_product(a_MK, b_KN).to(out_dtype or a_MK.dtype)


def row_addmm(
    c_MN: torch.Tensor,
    a_MK: torch.Tensor,
    b_KN: torch.Tensor,
    out_dtype: torch.dtype | None = None,
    beta: float = 1,
    alpha: float = 1,
) -> Any:
    if not _applies(a_MK.shape[0], a_MK, b_KN):
        return NotImplemented
    return (alpha * _one_row_product(a_MK, b_KN) + beta * c_MN.float()).to(out_dtype or a_MK.dtype)


def row_bmm(a_BMK: torch.Tensor, b_BKN: torch.Tensor, out_dtype: torch.dtype | None = None) -> Any:
    if not _applies(a_BMK.shape[1], a_BMK, b_BKN):
        return NotImplemented
    out_BMN = (_realized_f32(a_BMK)[:, :, :, None] * b_BKN[:, None].float()).sum(2)
    return out_BMN.to(out_dtype or a_BMK.dtype)


def _falling_back(first: Callable[..., Any], then: Callable[..., Any] | None) -> Callable[..., Any]:
    """`first`, or where it does not apply (`NotImplemented`), `then` (inductor's own decomposition)."""

    def decomposition(*args: Any, **kwargs: Any) -> Any:
        out = first(*args, **kwargs)
        return then(*args, **kwargs) if out is NotImplemented and then is not None else out

    return decomposition


def row_product_decompositions() -> dict[Any, Callable[..., Any]]:
    """Inductor's decomposition table with the one-row CPU products above in front of its own."""
    from torch._inductor.decomposition import select_decomp_table

    table = dict(select_decomp_table())
    for op, ours in ((aten.mm.default, row_mm), (aten.addmm.default, row_addmm), (aten.bmm.default, row_bmm)):
        table[op] = _falling_back(ours, table.get(op))
    return table


def row_products_backend(graph: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
    """A `torch.compile` backend: inductor with `row_product_decompositions()`."""
    from torch._functorch import config as functorch_config
    from torch._inductor.compile_fx import compile_fx

    with functorch_config.patch(enable_autograd_cache=False):
        return compile_fx(graph, list(example_inputs), decompositions=row_product_decompositions())

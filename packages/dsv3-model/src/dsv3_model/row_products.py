"""How the compiled decode step lowers its one-row matrix products on a CPU: as multiply-and-sum
reductions that inductor fuses with what feeds them, instead of calls into a BLAS library.

Why: a decode step of one row is a chain of matrix-vector products, each reading its weight once. Through
`aten.mm` on CPU each becomes an MKL or oneDNN call, which on this project's 2-core AMD EPYC reads an fp32
weight at 22 GB/s (MKL) or 65 GB/s (oneDNN, prepacked), plus a call's fixed cost on every small product. The
same product written `(x[:, :, None] * w_KN[None]).sum(1)` compiles to one vectorized C++ loop that read the
32000 x 1024 fp32 `lm_head` at 73 GB/s there, and that fuses the weight's own producers: a routed expert's
weights gathered by index (`w[idx]`) are read in place, never copied, and an FP8 weight is decoded to fp32
inside the loop (`dsv3_weights.fp8.dequantize_traceable_f32`), so each weight byte crosses the memory bus once.

Three details keep the loop at bandwidth, or near it:
- The activation is realized before the product (`_realized_f32`: a copy read through `as_strided`, which
  inductor cannot inline): otherwise inductor recomputes its producer (an RMSNorm, a SwiGLU) once per output
  feature, 32000 times for the `lm_head`, which made that loop compute-bound (42 GB/s).
- Products accumulate in fp32 whatever the dtype (as MKL and oneDNN do for bf16), rounded once at the end.
- Each multiply and the addition it feeds are one fused multiply-add (the C++ is compiled with
  fp-contract fast): where the loop is bound by arithmetic, not memory, one vector operation fewer per 16
  values, of seven for an FP8 weight (widen, shift, mask, three multiplies, add) and of four for a bf16 one.

The same table decodes FP8 e4m3 weights (`weight.float()`, which inductor would convert one value at a
time) by bit operations: `dsv3_weights.fp8.fp8_values_keeping_denormals` where the floating-point unit keeps
denormals when the step is compiled (the default), `fp8_values_traceable` (a few operations more, exact in
every mode) where flush-to-zero is set. `DeepseekForCausalLM.compiled_step` probes the mode when a decode
starts and keeps one compiled step per mode.

Chosen by static facts only: a CPU tensor and one row (`ROW_PRODUCT_MAX_ROWS`), so a prefill, a batch, and
every other device keep inductor's own lowering. The compile-time caches stay correct: inductor's graph cache
keys the graph after these decompositions; the AOT-autograd cache, which keys it before them, is off for
this backend (`row_products_backend`).

Shape legend: M rows, K reduced dim, N output features, B batch of matrices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dsv3_weights.fp8 import fp8_values_keeping_denormals, fp8_values_traceable

ROW_PRODUCT_MAX_ROWS = 1  # more rows would read each weight once per row
# outputs computed side by side in one loop: FP8 fp32 products decoded 26 G values/s with one, 38 with four
# (one-row 16384 x 4096 product, dev machine); bf16 and fp32 weights stream at the same speed either way
ROW_PRODUCT_PARTS = 4
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
    """fp32 `a @ b` as multiply-and-sum reductions over K, one per quarter of the N outputs
    (`ROW_PRODUCT_PARTS`): inductor fuses reductions over the same loop into one loop with one accumulator
    each, so four independent additions per step instead of one chain whose latency bounds the loop."""
    a_M1K = _realized_f32(a_MK)[:, None, :]
    parts = min(ROW_PRODUCT_PARTS, b_KN.shape[1])
    sums = [(a_M1K * b_Kn.T[None].float()).sum(2) for b_Kn in b_KN.chunk(parts, dim=1)]
    return torch.cat(sums, dim=1) if len(sums) > 1 else sums[0]


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


def fp8_decoding(keeping_denormals: bool) -> Callable[..., Any]:
    """The decomposition of `aten._to_copy` that decodes a CPU float8_e4m3fn tensor to fp32 by bit operations
    (the faster form only where `keeping_denormals`); any other conversion is left as it is. Counted in
    dynamo's counters as `dsv3_fp8_decode_fast` or `dsv3_fp8_decode_exact`."""
    decode = fp8_values_keeping_denormals if keeping_denormals else fp8_values_traceable
    counter = "dsv3_fp8_decode_fast" if keeping_denormals else "dsv3_fp8_decode_exact"

    def fp8_to_f32(x: torch.Tensor, *, dtype: torch.dtype | None = None, **options: Any) -> Any:
        plain = all(options.get(k) in (None, False) for k in ("layout", "pin_memory", "non_blocking"))
        same_device = options.get("device") in (None, x.device)
        same_format = options.get("memory_format") in (None, torch.preserve_format, torch.contiguous_format)
        if not (x.dtype == torch.float8_e4m3fn and dtype == torch.float32 and x.device.type == "cpu"):
            return NotImplemented
        if not (plain and same_device and same_format):
            return NotImplemented
        from torch._dynamo.utils import counters

        counters["inductor"][counter] += 1
        return decode(x)

    return fp8_to_f32


def _falling_back(first: Callable[..., Any], then: Callable[..., Any] | None) -> Callable[..., Any]:
    """`first`, or where it does not apply (`NotImplemented`), `then` (inductor's own decomposition)."""

    def decomposition(*args: Any, **kwargs: Any) -> Any:
        out = first(*args, **kwargs)
        return then(*args, **kwargs) if out is NotImplemented and then is not None else out

    return decomposition


def row_product_decompositions(keeping_denormals: bool = False) -> dict[Any, Callable[..., Any]]:
    """Inductor's decomposition table with the one-row CPU products and the FP8 decoding above in front of
    its own."""
    from torch._inductor.decomposition import select_decomp_table

    table = dict(select_decomp_table())
    ours_by_op: dict[Any, Callable[..., Any]] = {
        aten.mm.default: row_mm,
        aten.addmm.default: row_addmm,
        aten.bmm.default: row_bmm,
        aten._to_copy.default: fp8_decoding(keeping_denormals),
    }
    for op, ours in ours_by_op.items():
        table[op] = _falling_back(ours, table.get(op))
    return table


def row_products_backend(
    graph: torch.fx.GraphModule, example_inputs: Sequence[Any], *, keeping_denormals: bool = False
) -> Any:
    """A `torch.compile` backend: inductor with `row_product_decompositions(keeping_denormals)`. The
    default is the FP8 decoding exact in every floating-point mode; `row_products_backend_for` picks."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config
    from torch._inductor.compile_fx import compile_fx

    table = row_product_decompositions(keeping_denormals)
    # size_asserts off: the wrapper's per-input size and stride checks (about 0.5 us each, a decode step
    # has some 150 inputs) repeat what dynamo's guards check before every call of a static-shape graph.
    # cpp_wrapper: the code between the kernels (some 900 lines for the medium preset: buffers, 220 views,
    # the ATen calls) in C++ rather than Python, while the second thread waits: 5-6% of a compiled decode
    # step, FP8 and bf16 alike (medium preset, 9 of 10 alternated rounds in one process, AMD EPYC Zen 4)
    # fp-contract fast: the compiler fuses each product's multiply into its sum's addition (one FMA, one
    # rounding fewer; every value fed to it, an FP8 weight's dequantized value included, is as before):
    # FP8 step 4.56 against 4.91 ms (10 of 12 rounds), bf16 4.67 against 5.18 (10 of 12), fp32 1% (7 of
    # 12), the FP8 one-row product 15.9 against 14.3 G values/s (13 of 15); alternated in one process, Zen 4
    options = {"size_asserts": False, "cpp_wrapper": True, "cpp.enable_floating_point_contract_flag": "fast"}
    with functorch_config.patch(enable_autograd_cache=False), inductor_config.patch(options):
        return compile_fx(graph, list(example_inputs), decompositions=table)


def row_products_backend_for(keeping_denormals: bool) -> Callable[..., Any]:
    """`row_products_backend` with the FP8 decoding for a floating-point mode that does (or does not) keep
    denormals (`dsv3_weights.fp8.denormals_kept()`), one function object per mode."""
    return _BACKENDS[keeping_denormals]


_BACKENDS = {kept: functools.partial(row_products_backend, keeping_denormals=kept) for kept in (False, True)}

"""`PackedLinear`: an eager CPU linear layer over a weight reordered once into oneDNN's blocked layout,
swapped in for an `nn.Linear` only where a measurement on this machine says it is faster.

Why: `F.linear` on CPU goes through MKL for fp32, and MKL's kernels for one row (a decode step) read
weights at a fraction of the memory bandwidth on some CPUs. Measured on this project's 2-core AMD EPYC
(avx512_bf16, no AMX, 2 threads): the 32000 x 1024 fp32 `lm_head` for one row took 6.0 ms through
`F.linear` (22 GB/s, the same on 1, 2 or 4 threads) and 2.0 ms through oneDNN's inner product with the
weight prepacked (65 GB/s); in bf16, where `F.linear` already reaches oneDNN but with the plain layout,
2.5 ms against 0.63 ms; at 256 rows (prefill) 2.7x in fp32 and 1.0-1.3x in bf16. On a CPU where MKL is
fast the plain layer may win, so `faster_linear` measures both on the layer's own weight and keeps
the plain one unless the packed one is faster (`dsv3_blocks.timing`).

What it costs: the packed weight is an opaque oneDNN tensor, so the layer is for eager inference only
(no autograd, no `torch.compile`, no `state_dict` entry: the module that replaced an `nn.Linear` holds
no parameter), and it must be made after the weights are loaded and cast. fp32 and bf16 only (fp16
packing needs avx512_fp16 or avx_ne_convert). The products equal `F.linear`'s up to fp32 rounding
order (oneDNN accumulates in fp32, as MKL does).

Shape legend: N output features, K input features, R rows timed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsv3_blocks.timing import fastest

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
TIMED_ROWS = (1, 16)  # a decode step's rows and a short prompt's: packed must win at both
# Weights timed per candidate: copies of the layer's weight up to this many bytes (at most MAX_COPIES),
# more than the last-level cache of the CPUs this runs on (32 MiB here), so that, as in a decode step of a
# real model, the weights come from memory: timed on one cache-resident matrix, MKL's small products won
# where, read from memory, the packed ones were 1.5-2.3x faster.
TIMED_BYTES = 64 * 2**20
MAX_COPIES = 64

_packed_won: dict[tuple[object, ...], bool] = {}  # per process: (N, K, dtype, bias, threads) -> packed faster


def packable(weight: torch.Tensor) -> bool:
    """Static facts only: a CPU weight in fp32/bf16, and oneDNN present (for layers and expert stacks)."""
    return weight.device.type == "cpu" and weight.dtype in PACKABLE_DTYPES and torch.backends.mkldnn.is_available()


def packing_applies(linear: nn.Module) -> bool:
    """A plain `nn.Linear` with a packable weight."""
    return type(linear) is nn.Linear and packable(linear.weight)


def pack_weight(weight_NK: torch.Tensor) -> torch.Tensor:
    """The weight reordered into oneDNN's blocked layout for few-row products (its batch-size hint 1)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight_NK.detach(), 1)


def packed_product(x_RK: torch.Tensor, packed_NK: torch.Tensor, bias_N: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, W, b)` over a packed weight; any leading dimensions."""
    return torch.ops.mkldnn._linear_pointwise(x_RK, packed_NK, bias_N, "none", [], "")


class PackedLinear(nn.Module):
    """`[..., K] -> [..., N]` over a packed copy of an `nn.Linear`'s weight (the original is released)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight_NK = pack_weight(linear.weight)
        self.bias_N = None if linear.bias is None else linear.bias.detach()

    def forward(self, x_K: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            raise RuntimeError("PackedLinear is an eager kernel: compile a model loaded with the reference kernels")
        return packed_product(x_K, self.packed_weight_NK, self.bias_N)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_N is not None}"


def faster_linear(linear: nn.Module, *, measure: bool = True) -> nn.Module:
    """`PackedLinear(linear)` where packing applies and measured faster for this shape and dtype (measured
    once per process and shape, on the first layer of that shape, at `TIMED_ROWS` rows); else `linear`.
    `measure=False` packs wherever packing applies (for tests and benchmarks of the one form)."""
    if not packing_applies(linear):
        return linear
    assert isinstance(linear, nn.Linear)
    if not measure:
        return PackedLinear(linear)
    key = (
        linear.out_features,
        linear.in_features,
        linear.weight.dtype,
        linear.bias is not None,
        torch.get_num_threads(),
    )
    if key not in _packed_won:
        _packed_won[key] = all(_packed_faster(linear, rows) for rows in TIMED_ROWS)
    return PackedLinear(linear) if _packed_won[key] else linear


def measured_shapes() -> dict[tuple[object, ...], bool]:
    """What this process measured so far (a copy): (N, K, dtype, bias, threads) -> packed won."""
    return dict(_packed_won)


@torch.inference_mode()
def _packed_faster(linear: nn.Linear, rows: int) -> bool:
    """Both forms over copies of the layer's weight (`TIMED_BYTES`), at `rows` rows: packed faster?"""
    weight, bias = linear.weight.detach(), linear.bias
    copies = max(1, min(MAX_COPIES, TIMED_BYTES // (weight.numel() * weight.element_size())))
    plain_weights = [weight] + [weight.clone() for _ in range(copies - 1)]
    packed_weights = [pack_weight(w) for w in plain_weights]
    x_RK = torch.randn(rows, linear.in_features, dtype=weight.dtype)
    candidates = {
        "plain": lambda: [F.linear(x_RK, w, bias) for w in plain_weights],
        "packed": lambda: [packed_product(x_RK, w, bias) for w in packed_weights],
    }
    return fastest(candidates) == "packed"

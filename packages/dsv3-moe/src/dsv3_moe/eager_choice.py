"""The eager CPU/CUDA expert computation, chosen by a one-time measurement on the machine at hand.

Two exact forms of the same sum (they differ only in fp32 rounding order):

- `grouped`: the pairs sorted by expert, two `F.grouped_mm` calls over the runs of rows.
- `loop`: the same sorted runs, one `F.linear` pair per *active* expert (a host read of the run lengths).

Neither wins everywhere. On a CPU with AMX/avx512_bf16 `grouped_mm` beat the hand-tuned loops (issue 16);
on this project's 2-core AMD EPYC (avx512_bf16, no AMX) shared with other jobs, one decode token of the
medium MoE block took 52 ms with `grouped_mm` and 1.3 ms with the loop at 2 threads (1.3 / 1.2 ms at 1
thread): `grouped_mm`'s CPU kernel enters a parallel region per expert, and every region waits for a
descheduled thread. So the form is picked per process by timing both on the first call of each kind of
step (device, dtype, sizes, token-count bucket, thread count), interleaved, median of a few runs, and
cached for the process: a fast path is used only where it measured faster. Never chosen by tensor values.

Shape legend: T tokens, H hidden, K experts per token, P = T * K pairs, E local experts, I intermediate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from dsv3_blocks.timing import fastest
from dsv3_moe.expert_operands import ExpertOperands

Kernel = Callable[[ExpertOperands], torch.Tensor]
CALIBRATION_RUNS = 5

_chosen: dict[tuple[object, ...], str] = {}
_pinned: list[str] = []  # innermost `pinned(...)` block last


def eager_swiglu(ops: ExpertOperands) -> torch.Tensor:
    """fp32 [T, H]: the measured-faster of `grouped` and `loop` for this kind of step (measured once)."""
    key = (
        ops.hidden_TH.device.type,
        ops.hidden_TH.dtype,
        tuple(ops.gate_up_EXH.shape),
        ops.local_TK.shape[1],
        max(ops.local_TK.shape[0] - 1, 0).bit_length(),  # token-count bucket: 1, 2, 3-4, 5-8, ...
        torch.get_num_threads(),
    )
    if _pinned:
        return KERNELS[_pinned[-1]](ops)
    if key not in _chosen:
        _chosen[key] = _faster(ops)
    return KERNELS[_chosen[key]](ops)


@contextmanager
def pinned(kernel: str) -> Iterator[None]:
    """Within the block every eager expert computation runs `kernel` ("grouped" or "loop") instead of the
    measured choice: for comparisons that need one op order on both sides (a model with FP8 weights
    resident, which runs the loop, against its dequantized twin) and for benchmarks of one form."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    _pinned.append(kernel)
    try:
        yield
    finally:
        _pinned.pop()


def chosen_kernels() -> dict[tuple[object, ...], str]:
    """What this process measured so far (a copy), for reports and tests."""
    return dict(_chosen)


def _faster(ops: ExpertOperands) -> str:
    """The name of the kernel with the lower median time over interleaved runs on these very inputs."""
    return fastest({name: functools.partial(kernel, ops) for name, kernel in KERNELS.items()}, CALIBRATION_RUNS)


def _sorted_pairs(local_TK: torch.Tensor, num_local: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order_P, token_P, ends_E int32): pairs sorted by expert (stable), their tokens, run ends per expert."""
    sorted_expert_P, order_P = local_TK.reshape(-1).sort(stable=True)
    ends_E = torch.bincount(sorted_expert_P, minlength=num_local).cumsum(0).to(torch.int32)
    return order_P, order_P // local_TK.shape[1], ends_E


def _combine(
    hidden_TH: torch.Tensor,
    expert_out_PH: torch.Tensor,
    weight_TK: torch.Tensor,
    order_P: torch.Tensor,
    token_P: torch.Tensor,
) -> torch.Tensor:
    weighted_PH = expert_out_PH.to(torch.float32) * weight_TK.reshape(-1).index_select(0, order_P)[:, None]
    out_TH = hidden_TH.new_zeros(hidden_TH.shape, dtype=torch.float32)
    return out_TH.index_add_(0, token_P, weighted_PH)


def grouped_swiglu_mm(ops: ExpertOperands) -> torch.Tensor:
    """Two grouped matmuls over the runs of rows (the kernel skips experts whose run is empty)."""
    hidden_TH, local_TK, weight_TK, gate_up_EXH, down_EHI = ops
    order_P, token_P, ends_E = _sorted_pairs(local_TK, gate_up_EXH.shape[0])
    rows_PH = hidden_TH.index_select(0, token_P)
    gate_PI, up_PI = F.grouped_mm(rows_PH, gate_up_EXH.transpose(1, 2), offs=ends_E).chunk(2, dim=-1)
    expert_out_PH = F.grouped_mm(F.silu(gate_PI) * up_PI, down_EHI.transpose(1, 2), offs=ends_E)
    return _combine(hidden_TH, expert_out_PH, weight_TK, order_P, token_P)


def active_expert_loop(ops: ExpertOperands) -> torch.Tensor:
    """One `F.linear` pair per expert with rows (the run lengths read on the host: eager only)."""
    hidden_TH, local_TK, weight_TK, gate_up_EXH, down_EHI = ops
    return expert_loop(hidden_TH, local_TK, weight_TK, gate_up_EXH.shape[0], lambda e: (gate_up_EXH[e], down_EHI[e]))


def expert_loop(
    hidden_TH: torch.Tensor,
    local_TK: torch.Tensor,
    weight_TK: torch.Tensor,
    num_local: int,
    expert_weights: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.linear,
) -> torch.Tensor:
    """`active_expert_loop` over weights fetched per active expert: `expert_weights(e) -> (gate_up_XH,
    down_HI)`, a view of a stack or weights made on demand (FP8 kept resident, dequantized per expert),
    so both run the very same ops in the same order; `product(rows, weight)` is `F.linear` or the
    product over weights prepacked for this CPU (`dsv3_moe.packed_experts`)."""
    order_P, token_P, ends_E = _sorted_pairs(local_TK, num_local)
    rows_PH = hidden_TH.index_select(0, token_P)
    expert_out_PH = torch.empty_like(rows_PH)
    start = 0
    for expert, end in enumerate(ends_E.tolist()):
        if end > start:
            gate_up_XH, down_HI = expert_weights(expert)
            gate_RI, up_RI = product(rows_PH[start:end], gate_up_XH).chunk(2, dim=-1)
            expert_out_PH[start:end] = product(F.silu(gate_RI) * up_RI, down_HI)
        start = end
    return _combine(hidden_TH, expert_out_PH, weight_TK, order_P, token_P)


KERNELS: dict[str, Kernel] = {"grouped": grouped_swiglu_mm, "loop": active_expert_loop}

"""`ExpertOperands`: the five tensors every routed-expert computation takes, declared once.

`grouped_swiglu` makes them (global expert ids turned into local ones, other ranks' pairs at weight zero)
and hands them to whichever computation applies (`static_swiglu`, or the eager kernels of
`dsv3_moe.eager_choice`), so every kernel has the one signature `kernel(operands) -> out_TH` fp32.

Shape legend: T tokens, H hidden, K experts per token, E local experts, X = 2 * I (gate rows, then up
rows), I intermediate (local).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ExpertOperands(NamedTuple):
    """`local_TK`: local expert ids, all in `[0, E)`; `weight_TK`: fp32 routing weights (zero for pairs
    that belong to another rank's experts); `gate_up_EXH` / `down_EHI`: the stacked expert weights.
    A tuple, so a kernel unpacks it in one line."""

    hidden_TH: torch.Tensor
    local_TK: torch.Tensor
    weight_TK: torch.Tensor
    gate_up_EXH: torch.Tensor
    down_EHI: torch.Tensor

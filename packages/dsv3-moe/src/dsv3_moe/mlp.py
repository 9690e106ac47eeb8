"""`SwiGLUMLP`: `down_proj(silu(gate_proj(x)) * up_proj(x))` with transformers' names, used for the dense
MLP of the first `first_k_dense_replace` layers and for the shared experts (width
`moe_intermediate_size * n_shared_experts`).

The three projections come from an injected `linear_factory` (dsv3-blocks' `LinearFactory`, the
convention dsv3-mla uses too: `factory(name, in_features, out_features, bias)` with the *unsharded*
shape): a backend passes column-parallel gate/up and a row-parallel down, or quantized layers, and the
math stays here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsv3_blocks import LinearFactory, default_linear_factory


class SwiGLUMLP(nn.Module):
    def __init__(
        self, hidden_size: int, intermediate_size: int, *, linear_factory: LinearFactory = default_linear_factory
    ) -> None:
        super().__init__()
        self.gate_proj = linear_factory("gate_proj", hidden_size, intermediate_size, False)
        self.up_proj = linear_factory("up_proj", hidden_size, intermediate_size, False)
        self.down_proj = linear_factory("down_proj", intermediate_size, hidden_size, False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(hidden)) * self.up_proj(hidden))

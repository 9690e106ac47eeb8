"""The injection point for linear layers: a backend passes its own factory (column/row-parallel layers,
quantized layers) and the math of the module that calls it never changes.

A factory is called once per projection with HF's submodule name and the *unsharded* shape, e.g.
`factory("o_proj", num_heads * v_head_dim, hidden_size, bias)` in dsv3-mla or
`factory("down_proj", intermediate_size, hidden_size, False)` in dsv3-moe's `SwiGLUMLP`; it returns a
module mapping `[..., in_features_local] -> [..., out_features_local]`, where "local" follows the calling
package's shard plan (`mla_shard_plan`, `mlp_shard_plan`).
"""

from __future__ import annotations

from typing import Protocol

from torch import nn


class LinearFactory(Protocol):
    def __call__(self, name: str, in_features: int, out_features: int, bias: bool) -> nn.Module: ...


def default_linear_factory(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
    """Plain, unsharded `nn.Linear` (single device): one reference path; a backend injects its own."""
    return nn.Linear(in_features, out_features, bias=bias)

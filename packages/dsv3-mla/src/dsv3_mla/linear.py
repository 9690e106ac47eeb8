"""The injection point for linear layers: a backend passes its own factory (column/row-parallel
layers, quantized layers) and the attention math never changes.

A factory is called once per projection with HF's submodule name and the *unsharded* shape, e.g.
`factory("o_proj", num_heads * v_head_dim, hidden_size, bias)`; it returns a module mapping
`[..., in_features_local] -> [..., out_features_local]`, where "local" follows `mla_shard_plan`.
The absorbed path also reads `kv_b_proj.weight` ([local heads * (qk_nope + v), kv_lora_rank]).
"""

from __future__ import annotations

from typing import Protocol

from torch import nn


class LinearFactory(Protocol):
    def __call__(self, name: str, in_features: int, out_features: int, bias: bool) -> nn.Module: ...


def default_linear_factory(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
    """Plain, unsharded `nn.Linear` (single device)."""
    return nn.Linear(in_features, out_features, bias=bias)

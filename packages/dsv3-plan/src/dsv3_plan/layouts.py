"""Layouts: where each module family's weights live and in which format, as a small frozen record.

Two named layouts are compared throughout:

- `contrib`: what the NxDI contrib DeepSeek-V3 port does (docs/reference-port.md). Everything is
  dequantized to BF16 on the host; `q_a_proj` and `kv_a_proj_with_mqa` are plain `nn.Linear`, so every rank
  holds and reads them whole; the router's weight is fp32 and replicated; experts are split by TP only; the
  latent cache entry is written to both the K and the V slot (two copies); the prefill graph runs every
  expert on every token (NxD `forward_all_experts`).
- `dsv3`: ours. `q_a_proj`/`kv_a_proj_with_mqa` are row-parallel (their input dimension, hidden, is split
  over TP: the input is already replicated after the previous all-reduce, so slicing it is free, hidden is
  divisible by every TP that divides the heads, and one all-reduce of the 2112-wide fused output lands the
  full latent on every rank, where the latent norms and the cache need it). The router weight stays BF16
  as in the checkpoint (fp32 compute, docs/numerics.md section 6) and is split by expert, so each logit is still
  one full-length dot product and only 256 fp32 logits are all-gathered. Experts are split over EP x TP,
  weights may stay FP8 with their block scales, the latent is cached once, and prefill runs grouped
  experts (each token only through its top-k).

A layout is independent of the mesh (`tp`, `ep` live in `DeploymentConfig`), so "what change buys the
most" is a `dataclasses.replace` of one field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WeightFormat = Literal["bf16", "fp8"]
RouterFormat = Literal["fp32", "bf16"]
LAYOUT_NAMES = ("dsv3", "contrib")


@dataclass(frozen=True)
class Layout:
    name: str
    replicated_latent_projections: bool  # q_a_proj, kv_a_proj_with_mqa whole on every rank
    router_format: RouterFormat  # fp32 (contrib) or bf16 as in the checkpoint
    router_sharded: bool  # split by expert over tp
    expert_format: WeightFormat  # routed experts
    dense_format: WeightFormat  # the checkpoint's other FP8 linears: attention, shared experts, dense MLP
    cache_copies: int  # latent entries stored per token per layer (contrib writes K and V slots)
    prefill_all_experts: bool  # prefill computes every expert on every token
    expert_parallel: bool  # whether ep > 1 is supported


def contrib_layout() -> Layout:
    return Layout(
        name="contrib",
        replicated_latent_projections=True,
        router_format="fp32",
        router_sharded=False,
        expert_format="bf16",
        dense_format="bf16",
        cache_copies=2,
        prefill_all_experts=True,
        expert_parallel=False,
    )


def dsv3_layout(weights: WeightFormat) -> Layout:
    return Layout(
        name="dsv3",
        replicated_latent_projections=False,
        router_format="bf16",
        router_sharded=True,
        expert_format=weights,
        dense_format=weights,
        cache_copies=1,
        prefill_all_experts=False,
        expert_parallel=True,
    )


def layout_for(name: str, weights: WeightFormat) -> Layout:
    """The named layout; the contrib port cannot hold FP8 (it dequantizes on the host), so say so."""
    if name == "dsv3":
        return dsv3_layout(weights)
    if name == "contrib":
        if weights != "bf16":
            raise ValueError(
                "layout 'contrib' dequantizes the whole checkpoint to BF16 on the host; --weights fp8 needs "
                "--layout dsv3 (the ranked changes show what FP8 experts would buy the contrib layout)"
            )
        return contrib_layout()
    raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUT_NAMES)}")

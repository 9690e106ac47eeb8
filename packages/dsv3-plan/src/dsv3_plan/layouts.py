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

The `dsv3` layout is read from the record the NxDI adapter builds from, `dsv3_config.inventory.placements`
(torch-free): where the latent projections and the router weight live, and which weight formats the adapter
holds on device (`DEVICE_WEIGHT_FORMATS`: `bf16`; `fp8-experts`, the FP8 routed experts in NxD's quantized
expert layers, its default for an FP8 checkpoint: `default_weight_format`; and `fp8`, also the other linears
`dsv3_config.inventory.fp8_linears` names, in NxD's blockwise quantized linears). `adapter_builds` says whether
a layout is one the adapter builds: every `dsv3` one but BF16 experts with FP8 other linears.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from dsv3_config import REPLICATED, ModelConfig
from dsv3_config.inventory import placements

WeightFormat = Literal["bf16", "fp8"]
WeightChoice = Literal["bf16", "fp8", "fp8-experts"]  # fp8-experts: routed experts FP8, other linears BF16
RouterFormat = Literal["fp32", "bf16"]
LAYOUT_NAMES = ("dsv3", "contrib")
WEIGHT_CHOICES: tuple[WeightChoice, ...] = ("bf16", "fp8", "fp8-experts")


@dataclass(frozen=True)
class Layout:
    name: str
    replicated_latent_projections: bool  # q_a_proj, kv_a_proj_with_mqa whole on every rank
    router_format: RouterFormat  # fp32 (contrib) or bf16 as in the checkpoint
    router_sharded: bool  # split by expert over tp
    expert_format: WeightFormat  # routed experts
    dense_format: WeightFormat  # the other FP8 linears the adapter can hold FP8 (`fp8_linears`; not kv_b_proj)
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
    """Ours, as the adapter places it (`dsv3_config.inventory.placements`), with `weights` for every linear."""
    return Layout(
        name="dsv3",
        replicated_latent_projections=placements.LATENT_PROJECTION == REPLICATED,
        router_format="bf16",  # the adapter holds the router weight in the model dtype, as the checkpoint
        router_sharded=placements.ROUTER_WEIGHT != REPLICATED,
        expert_format=weights,
        dense_format=weights,
        cache_copies=1,
        prefill_all_experts=False,
        expert_parallel=True,
    )


def weight_choice(layout: Layout) -> WeightChoice:
    """The `--weights` name of a layout's formats."""
    if layout.expert_format == layout.dense_format:
        return layout.expert_format
    if layout.expert_format == "fp8":
        return "fp8-experts"
    raise ValueError(f"layout {layout.name!r}: BF16 experts with FP8 other linears has no --weights name")


def adapter_builds(layout: Layout) -> bool:
    """Whether the NxDI adapter builds `layout`: ours, in weight formats it holds on device."""
    ours = layout == replace(dsv3_layout("bf16"), expert_format=layout.expert_format, dense_format=layout.dense_format)
    return ours and weight_choice(layout) in placements.DEVICE_WEIGHT_FORMATS


def default_weights(name: str, cfg: ModelConfig) -> WeightChoice:
    """What a layout holds unless told: the adapter's default for `cfg` (FP8 experts for an FP8 checkpoint);
    the contrib port BF16."""
    if name != "dsv3":
        return "bf16"
    choice = placements.default_weight_format(cfg)
    return "fp8-experts" if choice == "fp8-experts" else "bf16"


def layout_for(name: str, weights: WeightChoice) -> Layout:
    """The named layout; the contrib port cannot hold FP8 (it dequantizes on the host), so say so."""
    if name == "dsv3":
        if weights == "fp8-experts":
            return replace(dsv3_layout("bf16"), expert_format="fp8")
        return dsv3_layout(weights)
    if name == "contrib":
        if weights != "bf16":
            raise ValueError(
                f"layout 'contrib' dequantizes the whole checkpoint to BF16 on the host; --weights {weights} needs "
                "--layout dsv3 (the ranked changes show what FP8 experts would buy the contrib layout)"
            )
        return contrib_layout()
    raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUT_NAMES)}")

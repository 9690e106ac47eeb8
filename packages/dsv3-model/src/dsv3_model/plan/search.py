"""Answers built on `make_plan`: the largest seq_len / batch that fits, and which layout change buys most.

Per-rank memory is affine in `seq_len` (weights fixed; cache and prefill scratch grow per token) and in
`batch` (cache and both scratches grow per sequence), so two plans give the slope and intercept and the
largest fitting value is one division, no search loop. Each candidate change is applied on its own to
the given layout and ranked by the per-rank HBM it frees (ties by the decode bytes it saves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dsv3_config import DeploymentConfig, ModelConfig
from dsv3_model.plan.devices import Device
from dsv3_model.plan.layouts import Layout
from dsv3_model.plan.plan import Plan, deployment, make_plan


def _total(cfg: ModelConfig, dep: DeploymentConfig, layout: Layout, dev: Device, **change: int) -> int:
    return make_plan(cfg, dep.model_copy(update=change), layout, dev).total_bytes


def _largest(cfg: ModelConfig, dep: DeploymentConfig, layout: Layout, dev: Device, field: str) -> int:
    one, two = _total(cfg, dep, layout, dev, **{field: 1}), _total(cfg, dep, layout, dev, **{field: 2})
    slope, intercept = two - one, 2 * one - two
    return max(0, (dev.hbm_bytes - intercept) // slope)


def largest_seq_len(cfg: ModelConfig, dep: DeploymentConfig, layout: Layout, dev: Device) -> int:
    """The longest context (prompt + generated) that fits at `dep.batch_size`, capped at the model's limit."""
    return min(_largest(cfg, dep, layout, dev, "seq_len"), cfg.max_position_embeddings)


def largest_batch(cfg: ModelConfig, dep: DeploymentConfig, layout: Layout, dev: Device) -> int:
    """The most sequences of `dep.seq_len` positions that fit."""
    return _largest(cfg, dep, layout, dev, "batch_size")


@dataclass(frozen=True)
class Change:
    name: str
    description: str
    memory_saved_bytes: int  # per rank
    decode_read_saved_bytes: int  # per rank per decode step
    fits_after: bool
    largest_seq_len_after: int


def _widest_ep(cfg: ModelConfig, dep: DeploymentConfig) -> int:
    """The largest ep with ep | tp, ep | n_routed_experts and (tp / ep) | moe_intermediate_size."""
    candidates = [
        ep
        for ep in range(1, dep.tp + 1)
        if dep.tp % ep == 0 and cfg.n_routed_experts % ep == 0 and cfg.moe_intermediate_size % (dep.tp // ep) == 0
    ]
    return max(candidates)


Apply = Callable[[ModelConfig, Layout, DeploymentConfig], "tuple[Layout, DeploymentConfig] | None"]
CANDIDATES: tuple[tuple[str, str, Apply], ...] = (
    (
        "fp8_experts",
        "keep routed experts FP8 with their 128x128 fp32 block scales",
        lambda c, lay, d: (replace(lay, expert_format="fp8"), d) if lay.expert_format == "bf16" else None,
    ),
    (
        "fp8_attention_and_mlps",
        "keep attention, shared experts and dense MLPs FP8 (block scales)",
        lambda c, lay, d: (replace(lay, dense_format="fp8"), d) if lay.dense_format == "bf16" else None,
    ),
    (
        "shard_latent_projections",
        "row-parallel q_a_proj and kv_a_proj_with_mqa instead of replicated",
        lambda c, lay, d: (
            (replace(lay, replicated_latent_projections=False), d) if lay.replicated_latent_projections else None
        ),
    ),
    (
        "shard_router",
        "router weight in BF16 (as in the checkpoint, fp32 compute) split by expert",
        lambda c, lay, d: (
            (replace(lay, router_format="bf16", router_sharded=True), d)
            if lay.router_format == "fp32" or not lay.router_sharded
            else None
        ),
    ),
    (
        "expert_parallel",
        "experts split E/ep x intermediate/moe_tp: same weight bytes, wider expert matmuls, "
        "and an all-experts prefill materializes only the local experts",
        lambda c, lay, d: (
            (replace(lay, expert_parallel=True), d.model_copy(update={"ep": _widest_ep(c, d)}))
            if d.ep == 1 and _widest_ep(c, d) > 1
            else None
        ),
    ),
    (
        "single_copy_cache",
        "store the 576-wide latent once instead of in both the K and V slots",
        lambda c, lay, d: (replace(lay, cache_copies=1), d) if lay.cache_copies > 1 else None,
    ),
)


def ranked_changes(cfg: ModelConfig, base: Plan) -> list[Change]:
    """Every applicable candidate, most per-rank memory saved first."""
    changes = []
    for name, description, apply in CANDIDATES:
        applied = apply(cfg, base.layout, base.deployment)
        if applied is None:
            continue
        layout, dep = applied
        dep = deployment(cfg, layout, **dep.model_dump())
        plan = make_plan(cfg, dep, layout, base.device)
        changes.append(
            Change(
                name=name,
                description=description,
                memory_saved_bytes=base.total_bytes - plan.total_bytes,
                decode_read_saved_bytes=base.decode.bytes_per_rank - plan.decode.bytes_per_rank,
                fits_after=plan.fits,
                largest_seq_len_after=largest_seq_len(cfg, dep, layout, base.device),
            )
        )
    return sorted(changes, key=lambda ch: (-ch.memory_saved_bytes, -ch.decode_read_saved_bytes, ch.name))

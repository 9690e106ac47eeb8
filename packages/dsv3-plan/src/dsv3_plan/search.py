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
from dsv3_plan.devices import Device
from dsv3_plan.layouts import Layout
from dsv3_plan.plan import Plan, deployment, make_plan


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


Applied = tuple[Layout, DeploymentConfig]


def _fp8_experts(cfg: ModelConfig, lay: Layout, dep: DeploymentConfig) -> Applied | None:
    return (replace(lay, expert_format="fp8"), dep) if lay.expert_format == "bf16" else None


def _fp8_rest(cfg: ModelConfig, lay: Layout, dep: DeploymentConfig) -> Applied | None:
    return (replace(lay, dense_format="fp8"), dep) if lay.dense_format == "bf16" else None


def _shard_latent(cfg: ModelConfig, lay: Layout, dep: DeploymentConfig) -> Applied | None:
    return (replace(lay, replicated_latent_projections=False), dep) if lay.replicated_latent_projections else None


def _shard_router(cfg: ModelConfig, lay: Layout, dep: DeploymentConfig) -> Applied | None:
    if lay.router_format == "bf16" and lay.router_sharded:
        return None
    return replace(lay, router_format="bf16", router_sharded=True), dep


def _expert_parallel(cfg: ModelConfig, lay: Layout, dep: DeploymentConfig) -> Applied | None:
    ep = _widest_ep(cfg, dep)
    if dep.ep > 1 or ep == 1:
        return None
    return replace(lay, expert_parallel=True), dep.model_copy(update={"ep": ep})


def _single_cache(cfg: ModelConfig, lay: Layout, dep: DeploymentConfig) -> Applied | None:
    return (replace(lay, cache_copies=1), dep) if lay.cache_copies > 1 else None


CANDIDATES: tuple[tuple[str, str, Callable[[ModelConfig, Layout, DeploymentConfig], Applied | None]], ...] = (
    ("fp8_experts", "keep routed experts FP8 with their 128x128 fp32 block scales", _fp8_experts),
    ("fp8_attention_and_mlps", "keep attention, shared experts and dense MLPs FP8 (block scales)", _fp8_rest),
    ("shard_latent_projections", "row-parallel q_a_proj and kv_a_proj_with_mqa instead of replicated", _shard_latent),
    ("shard_router", "router weight in BF16 (as in the checkpoint, fp32 compute) split by expert", _shard_router),
    (
        "expert_parallel",
        "experts split E/ep x intermediate/moe_tp: same weight bytes, wider expert matmuls, "
        "and an all-experts prefill materializes only the local experts",
        _expert_parallel,
    ),
    ("single_copy_cache", "store the 576-wide latent once instead of in both the K and V slots", _single_cache),
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

"""The text report of one plan, as `dsv3 plan` and `dsv3-plan` print it (`--json` prints `Plan.to_dict`)."""

from __future__ import annotations

from importlib import metadata

from dsv3_config.inventory.placements import DEVICE_WEIGHT_FORMATS
from dsv3_plan.devices import GiB
from dsv3_plan.layouts import Layout, adapter_builds
from dsv3_plan.plan import Plan
from dsv3_plan.search import Change

_FAMILY_LABELS = {
    "attention": "attention (q_b/q, kv_b, o_proj)",
    "latent_projections": "latent projections (q_a, kv_a)",
    "router": "router",
    "experts": "routed experts",
    "shared_experts": "shared experts",
    "dense_mlp": "dense MLP",
    "embeddings": "embeddings",
    "lm_head": "lm_head",
    "norms_and_biases": "norms, router bias",
}


def _gb(n: float) -> str:
    return f"{n / 1e9:8.3f}"


def _formats(lay: Layout) -> str:
    if lay.expert_format == lay.dense_format:
        return lay.expert_format
    return f"{lay.expert_format} experts, {lay.dense_format} other linears"


def adapter_line(lay: Layout) -> str:
    """Which layout the NxDI adapter builds (its record, `dsv3_config.inventory.placements`) and whether this is it."""
    installed = _adapter_version()
    who = f"dsv3-model {installed}" if installed else "not installed here (dsv3-model)"
    built = "this plan is that layout" if adapter_builds(lay) else "this plan is NOT what it builds"
    return (
        f"NxDI adapter ({who}) builds: layout dsv3, weights {' or '.join(DEVICE_WEIGHT_FORMATS)} on device "
        f"(fp8-experts by default for an FP8 checkpoint); {built}"
    )


def _adapter_version() -> str | None:
    """dsv3-model's version if it is installed (the metadata only: importing it would import torch)."""
    try:
        return metadata.version("dsv3-model")
    except metadata.PackageNotFoundError:
        return None


def plan_text(plan: Plan, name: str, max_seq: int, max_batch: int, changes: list[Change]) -> str:
    dep, dev, lay = plan.deployment, plan.device, plan.layout
    copies = "1 copy" if lay.cache_copies == 1 else f"{lay.cache_copies} copies"
    lines = [
        f"{name} on {dev.name} ({dev.rank_unit}: {dev.hbm_bytes / GiB:.1f} GiB = {dev.hbm_bytes / 1e9:.2f} GB HBM, "
        f"{dev.hbm_bytes_per_s / 1e12:.3f} TB/s per rank)",
        f"layout {lay.name}, tp {dep.tp}, ep {dep.ep}, batch {dep.batch_size}, seq_len {dep.seq_len}, "
        f"weights {_formats(lay)}",
        adapter_line(lay),
        "",
        "per-rank memory                           GB   placement",
    ]
    for fam in plan.families:
        lines.append(f"  {_FAMILY_LABELS[fam.name]:<34}{_gb(fam.bytes_per_rank)}   {fam.placement}")
    lines += [
        f"  {'weights':<34}{_gb(plan.weight_bytes)}   ({plan.weight_bytes / GiB:.2f} GiB)",
        f"  {'latent KV cache':<34}{_gb(plan.kv_cache_bytes)}   {copies}, replicated on every rank",
        f"  {'scratch (prefill + decode graphs)':<34}{_gb(plan.scratch_bytes)}   see docs/planner.md",
        f"  {'total':<34}{_gb(plan.total_bytes)}   of {dev.hbm_bytes / 1e9:.2f}: "
        + (
            f"fits, {plan.free_bytes / 1e9:.2f} GB free"
            if plan.fits
            else f"DOES NOT FIT, {-plan.free_bytes / 1e9:.2f} over"
        ),
        "",
        f"decode step: {plan.decode.bytes_per_rank / 1e9:.3f} GB read per rank "
        f"({plan.decode_reads['kv_cache'] / 1e9:.3f} GB of it cache) -> floor {plan.decode.seconds * 1e3:.3f} ms",
        f"prefill of {dep.batch_size * dep.seq_len} tokens: {plan.prefill.bytes_per_rank / 1e9:.2f} GB, "
        f"{plan.prefill.flops_per_rank / 1e12:.2f} TFLOP per rank -> floor {plan.prefill.seconds * 1e3:.1f} ms "
        f"({plan.prefill.bound}-bound)",
        f"largest seq_len that fits at batch {dep.batch_size}: {max_seq}; "
        f"largest batch at seq_len {dep.seq_len}: {max_batch}",
        "",
        "layout changes, most HBM freed first        saved GB   decode GB saved   fits   max seq_len",
    ]
    if not changes:
        lines.append("  (none: every candidate change is already applied)")
    for i, ch in enumerate(changes, 1):
        lines.append(
            f"  {i}. {ch.name:<38}{_gb(ch.memory_saved_bytes)}   {_gb(ch.decode_read_saved_bytes)}        "
            f"{'yes' if ch.fits_after else 'no ':<5}  {ch.largest_seq_len_after}"
        )
    return "\n".join(lines)

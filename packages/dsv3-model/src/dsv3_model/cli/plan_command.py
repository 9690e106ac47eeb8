"""`dsv3 plan`: per-rank memory, fit, step-time floors and the best layout change, before any hardware.

Pure arithmetic (`dsv3_model.plan`), no torch import, so it answers instantly. The arithmetic and the
scratch model are in docs/planner.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from dsv3_config import PRESETS, ModelConfig, load_config, preset
from dsv3_model.cli.errors import UsageError
from dsv3_model.cli.options import check_ep_divides_tp, existing_path, positive_int
from dsv3_model.plan import (
    DEVICES,
    LAYOUT_NAMES,
    Change,
    Plan,
    deployment,
    device,
    largest_batch,
    largest_seq_len,
    layout_for,
    make_plan,
    ranked_changes,
)
from dsv3_model.plan.devices import GiB

_DTYPES = {"bf16": "bfloat16", "fp8": "fp8"}
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


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("plan", help="will a layout fit a device, and how fast can a step be")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=existing_path, help="a model directory or config.json")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named config")
    p.add_argument("--tp", type=positive_int, required=True, help="tensor-parallel ranks, >= 1")
    p.add_argument("--ep", type=positive_int, default=1, help="expert-parallel degree, dividing tp (default 1)")
    p.add_argument("--batch", type=positive_int, default=1, help="sequences per step, >= 1 (default 1)")
    p.add_argument(
        "--seq-len",
        type=positive_int,
        default=4096,
        help="positions per sequence, prompt + output, >= 1 and <= max_position_embeddings (default 4096)",
    )
    p.add_argument("--weights", choices=tuple(_DTYPES), default="bf16", help="weight format in HBM (default bf16)")
    p.add_argument("--device", choices=tuple(DEVICES), default="trn2", help="per-rank device table (default trn2)")
    p.add_argument("--layout", choices=LAYOUT_NAMES, default="dsv3", help="dsv3 (ours) or contrib (the NxDI port)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_plan)


def _config(args: argparse.Namespace) -> ModelConfig:
    return preset(args.preset) if args.preset is not None else load_config(args.model)


def _gb(n: float) -> str:
    return f"{n / 1e9:8.3f}"


def _text(plan: Plan, name: str, max_seq: int, max_batch: int, changes: list[Change]) -> str:
    dep, dev, lay = plan.deployment, plan.device, plan.layout
    copies = "1 copy" if lay.cache_copies == 1 else f"{lay.cache_copies} copies"
    lines = [
        f"{name} on {dev.name} ({dev.rank_unit}: {dev.hbm_bytes / GiB:.1f} GiB = {dev.hbm_bytes / 1e9:.2f} GB HBM, "
        f"{dev.hbm_bytes_per_s / 1e12:.3f} TB/s per rank)",
        f"layout {lay.name}, tp {dep.tp}, ep {dep.ep}, batch {dep.batch_size}, seq_len {dep.seq_len}, "
        f"weights {dep.weight_dtype}",
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


def _plan(args: argparse.Namespace) -> int:
    check_ep_divides_tp(args.tp, args.ep)
    cfg = _config(args)
    try:
        layout = layout_for(args.layout, args.weights)
        dep = deployment(
            cfg,
            layout,
            tp=args.tp,
            ep=args.ep,
            batch_size=args.batch,
            seq_len=args.seq_len,
            weight_dtype=_DTYPES[args.weights],
        )
    except ValueError as err:  # the layout or the degrees do not fit this model: the options' fault
        raise UsageError(str(err)) from err
    dev = device(args.device)
    plan = make_plan(cfg, dep, layout, dev)
    max_seq, max_batch = largest_seq_len(cfg, dep, layout, dev), largest_batch(cfg, dep, layout, dev)
    changes = ranked_changes(cfg, plan)
    name = args.preset if args.preset is not None else str(args.model)
    if args.json:
        out: dict[str, Any] = {
            "model": name,
            **plan.to_dict(),
            "largest_seq_len": max_seq,
            "largest_batch": max_batch,
            "ranked_changes": [asdict(ch) for ch in changes],
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(_text(plan, name, max_seq, max_batch, changes))
    return 0

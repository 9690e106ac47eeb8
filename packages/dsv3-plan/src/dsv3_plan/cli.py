"""The planner's command line: `dsv3-plan` on its own (this package and dsv3-config, no torch), and the
options and handler that `dsv3 plan` in dsv3-model registers as its `plan` subcommand.

Errors follow the `dsv3` contract: a bad option is argparse's one line or an `OptionError` (exit 2, after
the usage line); a bad config or a missing file is one line (exit 1); `--debug` or `DSV3_DEBUG=1` adds the
traceback. `dsv3 plan` turns `OptionError` into its own `UsageError`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dsv3_config import PRESETS, ConfigError, ModelConfig, load_config, preset
from dsv3_plan.devices import DEVICES, device
from dsv3_plan.layouts import LAYOUT_NAMES, WEIGHT_CHOICES, adapter_builds, default_weights, layout_for
from dsv3_plan.plan import deployment, make_plan
from dsv3_plan.report import plan_text
from dsv3_plan.search import largest_batch, largest_seq_len, ranked_changes

_DTYPES = {"bf16": "bfloat16", "fp8": "fp8", "fp8-experts": "fp8"}
DATA_EXIT, BROKEN_PIPE_EXIT = 1, 141


class OptionError(ValueError):
    """Options that parse one by one but cannot run together (`--ep` not dividing `--tp`, fp8 contrib)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


_positive_int.__name__ = "integer"  # argparse names the type in "invalid integer value"


def _existing_path(text: str) -> Path:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {text!r}")
    return Path(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The planner's options, shared by `dsv3-plan` and `dsv3 plan`."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=_existing_path, help="a model directory or config.json")
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named config")
    p.add_argument("--tp", type=_positive_int, required=True, help="tensor-parallel ranks, >= 1")
    p.add_argument("--ep", type=_positive_int, default=1, help="expert-parallel degree, dividing tp (default 1)")
    p.add_argument("--batch", type=_positive_int, default=1, help="sequences per step, >= 1 (default 1)")
    p.add_argument(
        "--seq-len",
        type=_positive_int,
        default=4096,
        help="positions per sequence, prompt + output, >= 1 and <= max_position_embeddings (default 4096)",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHT_CHOICES,
        default=None,
        help="weight format in HBM: bf16, fp8-experts (routed experts FP8 with fp32 block scales, other linears "
        "BF16) or fp8 (also attention, latent projections, dense and shared-expert MLPs; kv_b_proj BF16), all "
        "three built by the NxDI adapter (NeuronConfig dsv3_weights); default: fp8-experts for an FP8 checkpoint, "
        "bf16 otherwise (contrib: bf16)",
    )
    p.add_argument("--device", choices=tuple(DEVICES), default="trn2", help="per-rank device table (default trn2)")
    p.add_argument("--layout", choices=LAYOUT_NAMES, default="dsv3", help="dsv3 (ours) or contrib (the NxDI port)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _config(args: argparse.Namespace) -> ModelConfig:
    return preset(args.preset) if args.preset is not None else load_config(args.model)


def run(args: argparse.Namespace) -> int:
    """Plan and print; raises `OptionError` for options that cannot run together, `ConfigError` / `OSError`
    for a config that does not load."""
    if args.tp % args.ep:
        raise OptionError(f"--ep {args.ep} must divide --tp {args.tp} (each expert group has tp/ep ranks)")
    cfg = _config(args)
    weights = default_weights(args.layout, cfg) if args.weights is None else args.weights
    try:
        layout = layout_for(args.layout, weights)
        dep = deployment(
            cfg,
            layout,
            tp=args.tp,
            ep=args.ep,
            batch_size=args.batch,
            seq_len=args.seq_len,
            weight_dtype=_DTYPES[weights],
        )
    except ValueError as err:  # the layout or the degrees do not fit this model: the options' fault
        raise OptionError(str(err)) from err
    dev = device(args.device)
    plan = make_plan(cfg, dep, layout, dev)
    max_seq, max_batch = largest_seq_len(cfg, dep, layout, dev), largest_batch(cfg, dep, layout, dev)
    changes = ranked_changes(cfg, plan)
    name = args.preset if args.preset is not None else str(args.model)
    if args.json:
        out: dict[str, Any] = {
            "model": name,
            **plan.to_dict(),
            "adapter_builds_this_layout": adapter_builds(layout),
            "largest_seq_len": max_seq,
            "largest_batch": max_batch,
            "ranked_changes": [asdict(ch) for ch in changes],
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(plan_text(plan, name, max_seq, max_batch, changes))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`dsv3-plan`: the same options and output as `dsv3 plan`; a bad option or config exits (`SystemExit`)
    through argparse with its one line."""
    parser = argparse.ArgumentParser(
        prog="dsv3-plan", description="Will a layout fit a device, and how fast can a step be (no torch)."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also DSV3_DEBUG=1)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("DSV3_DEBUG", "") not in ("", "0")
    try:
        return run(args)
    except BrokenPipeError:  # the reader of our output left (`dsv3-plan ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except (OptionError, ConfigError, OSError) as err:
        if debug:
            traceback.print_exc()
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        if isinstance(err, OptionError):
            parser.error(message)  # the usage line, then `dsv3-plan: error: ...`, exit 2
        parser.exit(DATA_EXIT, f"{parser.prog}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())

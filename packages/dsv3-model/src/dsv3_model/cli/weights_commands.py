"""`dsv3 convert`, `dsv3 make-checkpoint`, `dsv3 verify-checkpoint`: argparse over `dsv3_weights`.

Options are checked while parsing (`cli/options.py`); errors in the checkpoint (`CheckpointError`) and a
destination that is not new (`FileExistsError`) reach `cli/main.py`, which prints one line and exits 1.
The summary of a long job (bytes, time, peak memory) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

from dsv3_config import PRESETS
from dsv3_model.cli.options import existing_directory, positive_float, positive_int, preset_or_config, seed


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    convert = subparsers.add_parser("convert", help="FP8 checkpoint -> BF16 HF checkpoint, streaming, resumable")
    convert.add_argument("src", type=existing_directory, help="checkpoint directory (config.json + safetensors)")
    convert.add_argument("dst", help="output directory (new, or a killed conversion to resume)")
    convert.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    convert.add_argument(
        "--workers", type=positive_int, default=1, help="processes writing shards in parallel, >= 1 (default 1)"
    )
    convert.add_argument("--mtp", choices=["keep", "drop"], default="keep", help="MTP layer tensors (default keep)")
    convert.add_argument(
        "--max-shard-size", type=positive_float, default=5.0, help="GiB per output shard, > 0 (default 5)"
    )
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    convert.set_defaults(handler=_convert)

    make = subparsers.add_parser("make-checkpoint", help="random weights in the published checkpoint layout")
    make.add_argument("dst", help="output directory (new or empty)")
    make.add_argument(
        "--preset", type=preset_or_config, required=True, help=f"a preset ({', '.join(PRESETS)}) or config.json path"
    )
    make.add_argument("--fp8", action="store_true", help="FP8 e4m3 weights with weight_scale_inv, as DeepSeek ships")
    make.add_argument("--seed", type=seed, default=0, help="weights' seed, 0..2**64-1 (default 0)")
    make.add_argument("--max-shard-size", type=positive_float, default=5.0, help="GiB per shard, > 0 (default 5)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    make.set_defaults(handler=_make)

    verify = subparsers.add_parser("verify-checkpoint", help="check a checkpoint against its config.json")
    verify.add_argument("directory", type=existing_directory)
    verify.add_argument("--no-values", action="store_true", help="skip the NaN/Inf scan (headers only)")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.set_defaults(handler=_verify)


def _gib(value: float) -> int:
    return max(1, int(value * 1024**3))


def _convert(args: argparse.Namespace) -> int:
    from dsv3_weights import OUT_DTYPES, convert_checkpoint

    summary = convert_checkpoint(
        args.src,
        args.dst,
        dtype=OUT_DTYPES[args.dtype],
        mtp=args.mtp,
        workers=args.workers,
        max_shard_bytes=_gib(args.max_shard_size),
        progress=not args.no_progress,
    )
    print(summary.format(), file=sys.stderr)
    return 0


def _make(args: argparse.Namespace) -> int:
    from dsv3_model.cli.config_command import resolve_config
    from dsv3_weights import make_checkpoint

    cfg = resolve_config(args.preset)
    make_checkpoint(
        args.dst,
        cfg,
        fp8=args.fp8,
        seed=args.seed,
        max_shard_bytes=_gib(args.max_shard_size),
        progress=not args.no_progress,
    )
    print(f"wrote {args.dst}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dsv3_weights import verify_checkpoint

    problems = verify_checkpoint(args.directory, check_values=not args.no_values, progress=not args.no_progress)
    for problem in problems:
        print(problem)
    print(f"{args.directory}: {'OK' if not problems else f'{len(problems)} problems'}", file=sys.stderr)
    return 1 if problems else 0

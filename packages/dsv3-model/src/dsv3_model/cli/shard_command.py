"""`dsv3 shard SRC DST --tp N [--ep M]`: an HF checkpoint -> the per-rank files NxDI loads pre-sharded.

Pure dsv3 code (no NxD/NxDI needed): `dsv3_model.neuron.per_rank_files.write_per_rank_files`, streaming,
into `DST/weights/tp{rank}_sharded_checkpoint.safetensors`. Errors in the checkpoint print one clear
message and exit 1; a progress bar (on a terminal) and the summary (bytes read and written, time, peak
memory) go to stderr.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    shard = subparsers.add_parser(
        "shard", help="HF checkpoint -> NxDI per-rank files (DST/weights/tp{r}_sharded_checkpoint.safetensors)"
    )
    shard.add_argument("src", help="HF checkpoint directory (config.json + safetensors; FP8 or not)")
    shard.add_argument("dst", help="NxDI compiled-model directory; files go to DST/weights/")
    shard.add_argument("--tp", type=int, required=True, help="tensor-parallel degree (NeuronConfig tp_degree)")
    shard.add_argument(
        "--ep",
        type=int,
        default=1,
        help="expert-parallel degree of the routed experts (NeuronConfig moe_ep_degree, dividing --tp; "
        "moe_tp_degree is tp/ep; default 1)",
    )
    shard.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="NeuronConfig torch_dtype (default bf16)"
    )
    shard.set_defaults(handler=_shard)


def _shard(args: argparse.Namespace) -> int:
    from dsv3_model.neuron.per_rank_files import write_per_rank_files
    from dsv3_weights import OUT_DTYPES, CheckpointError

    try:
        summary = write_per_rank_files(
            args.src, args.dst, tp_degree=args.tp, ep_degree=args.ep, dtype=OUT_DTYPES[args.dtype], progress=True
        )
    except (CheckpointError, KeyError, ValueError) as err:
        print(f"dsv3 shard: error: {err}", file=sys.stderr)
        return 1
    print(f"{summary.format()}; {args.tp} rank files in {args.dst}/weights", file=sys.stderr)
    return 0

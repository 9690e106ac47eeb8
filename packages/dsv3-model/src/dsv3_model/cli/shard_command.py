"""`dsv3 shard SRC DST --tp N [--ep M]`: an HF checkpoint -> the per-rank files NxDI loads pre-sharded.

Pure dsv3 code (no NxD/NxDI needed): `dsv3_model.neuron.per_rank_files.write_per_rank_files`, streaming,
into `DST/weights/tp{rank}_sharded_checkpoint.safetensors`. Errors in the checkpoint print one clear
message and exit 1; the summary (bytes, time, peak memory) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time


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
    from dsv3_weights.progress import peak_rss_bytes

    start = time.perf_counter()
    try:
        paths = write_per_rank_files(
            args.src, args.dst, tp_degree=args.tp, ep_degree=args.ep, dtype=OUT_DTYPES[args.dtype]
        )
    except (CheckpointError, KeyError, ValueError) as err:
        print(f"dsv3 shard: error: {err}", file=sys.stderr)
        return 1
    own, _ = peak_rss_bytes()
    written = sum(path.stat().st_size for path in paths) / 1024**3
    seconds = time.perf_counter() - start
    print(
        f"dsv3 shard: wrote {len(paths)} rank files ({written:.2f} GiB) to {paths[0].parent} in {seconds:.1f} s; "
        f"peak RSS {own / 1024**3:.2f} GiB",
        file=sys.stderr,
    )
    return 0

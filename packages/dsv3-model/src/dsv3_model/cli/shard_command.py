"""`dsv3 shard SRC DST --tp N [--ep M]`: an HF checkpoint -> the per-rank files NxDI loads pre-sharded.

Pure dsv3 code (no NxD/NxDI needed): `dsv3_model.nxdi_checkpoint.per_rank_files.write_per_rank_files`, streaming,
into `DST/weights/tp{rank}_sharded_checkpoint.safetensors`. `--tp`/`--ep` are checked while parsing and
against each other before anything is read, and a layout the model's tensors cannot be cut into is a
usage error naming them (exit 2); errors in the checkpoint reach `cli/main.py` (one line, exit 1). A
progress bar (on a terminal) and the summary (bytes read and written, time, peak memory) go to stderr.
"""

from __future__ import annotations

import argparse
import sys

from dsv3_config.inventory.placements import DEVICE_WEIGHT_FORMATS
from dsv3_model.cli.errors import UsageError
from dsv3_model.cli.options import check_ep_divides_tp, existing_directory, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    shard = subparsers.add_parser(
        "shard", help="HF checkpoint -> NxDI per-rank files (DST/weights/tp{r}_sharded_checkpoint.safetensors)"
    )
    shard.add_argument(
        "src", type=existing_directory, help="HF checkpoint directory (config.json + safetensors; FP8 or not)"
    )
    shard.add_argument("dst", help="NxDI compiled-model directory; files go to DST/weights/")
    shard.add_argument(
        "--tp", type=positive_int, required=True, help="tensor-parallel degree, >= 1 (NeuronConfig tp_degree)"
    )
    shard.add_argument(
        "--ep",
        type=positive_int,
        default=1,
        help="expert-parallel degree of the routed experts (NeuronConfig moe_ep_degree, dividing --tp; "
        "moe_tp_degree is tp/ep; default 1)",
    )
    shard.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="NeuronConfig torch_dtype (default bf16)"
    )
    shard.add_argument(
        "--weights",
        "--expert-weights",  # its earlier name, when only the routed experts could stay FP8
        dest="weights",
        choices=DEVICE_WEIGHT_FORMATS,
        default=None,
        help="weights as the model holds them (NeuronConfig dsv3_weights): bf16 (FP8 dequantized), fp8-experts "
        "(routed experts FP8 with fp32 block scales) or fp8 (also attention, dense and shared-expert MLPs; "
        "kv_b_proj, router, embeddings, lm_head BF16); default: fp8-experts for an FP8 checkpoint, bf16 otherwise",
    )
    shard.set_defaults(handler=_shard)


def _shard(args: argparse.Namespace) -> int:
    check_ep_divides_tp(args.tp, args.ep)
    from dsv3_model.nxdi_checkpoint.per_rank_files import write_per_rank_files
    from dsv3_weights import OUT_DTYPES, CheckpointError

    try:
        summary = write_per_rank_files(
            args.src,
            args.dst,
            tp_degree=args.tp,
            ep_degree=args.ep,
            dtype=OUT_DTYPES[args.dtype],
            weights=args.weights,
            progress=True,
        )
    except KeyError as err:  # a tensor the NxDI model needs, or one it does not use
        raise CheckpointError(str(err.args[0]) if err.args else str(err)) from err
    except ValueError as err:
        if type(err) is not ValueError:  # CheckpointError, ConfigError, a JSON or pydantic error: not the layout
            raise
        # the ranks cannot cut this model's tensors (heads, experts, FP8 blocks): the options' fault
        raise UsageError(f"--tp {args.tp} --ep {args.ep} do not fit this model: {err}") from err
    print(f"{summary.format()}; {args.tp} rank files in {args.dst}/weights", file=sys.stderr)
    return 0

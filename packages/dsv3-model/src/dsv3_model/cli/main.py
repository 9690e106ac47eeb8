"""Entry point of the `dsv3` command.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, adding its subcommands with a
`handler(args) -> int` default. Modules are imported lazily at parse time so `dsv3 config show`
never pays for importing torch.

A user's mistake is one line on stderr (`dsv3 COMMAND: error: ...`) and an exit status: 2 for a bad
option (`UsageError`, argparse), 1 for bad data (`ConfigError`, `CheckpointError`, a missing file).
`dsv3 --debug ...` or `DSV3_DEBUG=1` shows the traceback instead (`cli/errors.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dsv3_config import ConfigError
from dsv3_model.cli.errors import DATA_EXIT, USAGE_EXIT, UsageError

COMMAND_MODULES: tuple[str, ...] = (
    "dsv3_model.cli.config_command",
    "dsv3_model.cli.plan_command",
    "dsv3_model.cli.weights_commands",
    "dsv3_model.cli.run_commands",
    "dsv3_model.cli.demo_command",
    "dsv3_model.cli.shard_command",
    "dsv3_model.cli.golden_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsv3", description="DeepSeek-V3-family models: inspect, convert, run, verify."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also DSV3_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug or os.environ.get("DSV3_DEBUG", "") not in ("", "0"):
        return int(args.handler(args))
    try:
        return int(args.handler(args))
    except UsageError as err:
        parser.print_usage(sys.stderr)
        print(f"dsv3 {args.command}: error: {err}", file=sys.stderr)
        return USAGE_EXIT
    except _data_errors() as err:
        print(f"dsv3 {args.command}: error: {err}", file=sys.stderr)
        return DATA_EXIT


def _data_errors() -> tuple[type[BaseException], ...]:
    """The bad-data error types; `CheckpointError` only once dsv3-weights (and torch) was imported."""
    weights_errors = sys.modules.get("dsv3_weights.errors")
    checkpoint = (weights_errors.CheckpointError,) if weights_errors is not None else ()
    return (ConfigError, OSError, *checkpoint)


if __name__ == "__main__":
    sys.exit(main())

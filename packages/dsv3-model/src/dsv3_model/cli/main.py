"""Entry point of the `dsv3` command.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, adding its subcommands with a
`handler(args) -> int` default. Modules are imported lazily at parse time so `dsv3 config show`
never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "dsv3_model.cli.config_command",
    "dsv3_model.cli.plan_command",
    "dsv3_model.cli.weights_commands",
    "dsv3_model.cli.run_commands",
    "dsv3_model.cli.demo_command",
    "dsv3_model.cli.shard_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsv3", description="DeepSeek-V3-family models: inspect, convert, run, verify."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

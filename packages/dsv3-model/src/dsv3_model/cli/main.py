"""Entry point of the `dsv3` command.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, adding its subcommands with a
`handler(args) -> int` default. Modules are imported lazily at parse time so `dsv3 config show`
never pays for importing torch.

A user's mistake is one line on stderr (`dsv3 COMMAND: error: ...`) and an exit status: 2 for a bad
option (`UsageError`, argparse), 1 for bad data (`ConfigError`, `CheckpointError`, `DataError`, a
missing file). `dsv3 --debug ...` or `DSV3_DEBUG=1` also shows the traceback (same line, same exit
status). Ctrl-C is one line and exit 130; output cut short by its reader (`| head`) is exit 141,
silently. A message of several lines is joined into one (`cli/errors.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import traceback
from collections.abc import Sequence

from dsv3_config import ConfigError
from dsv3_model.cli.errors import BROKEN_PIPE_EXIT, DATA_EXIT, INTERRUPTED_EXIT, USAGE_EXIT, DataError, UsageError

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
    for command_parser in subparsers.choices.values():  # whose usage line a UsageError repeats
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("DSV3_DEBUG", "") not in ("", "0")
    command_parser: argparse.ArgumentParser = args.command_parser
    try:
        return int(args.handler(args))
    except UsageError as err:
        _report(command_parser, err, debug, usage=True)
        return USAGE_EXIT
    except BrokenPipeError as err:
        if not _stdout_is_gone():
            _report(command_parser, err, debug, usage=False)
            return DATA_EXIT
        # the reader of our output left (`dsv3 plan ... | head`): nothing to report, nothing more to write
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except _data_errors() as err:
        _report(command_parser, err, debug, usage=False)
        return DATA_EXIT
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{command_parser.prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT


def _report(command_parser: argparse.ArgumentParser, err: BaseException, debug: bool, *, usage: bool) -> None:
    """The traceback only under --debug; then (after the usage line, for a bad option) exactly one line."""
    if debug:
        traceback.print_exc()
    if usage:
        command_parser.print_usage(sys.stderr)
    message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    print(f"{command_parser.prog}: error: {message}", file=sys.stderr)


def _stdout_is_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll says POLLERR), not some other broken pipe."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() on this platform, stdout without a descriptor
        return False


def _data_errors() -> tuple[type[BaseException], ...]:
    """The bad-data error types; `CheckpointError` only once dsv3-weights (and torch) was imported."""
    weights_errors = sys.modules.get("dsv3_weights.errors")
    checkpoint = (weights_errors.CheckpointError,) if weights_errors is not None else ()
    return (ConfigError, DataError, OSError, *checkpoint)


if __name__ == "__main__":
    sys.exit(main())

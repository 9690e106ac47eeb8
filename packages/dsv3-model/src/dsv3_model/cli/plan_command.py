"""`dsv3 plan`: per-rank memory, fit, step-time floors and the best layout change, before any hardware.

The planner is its own package, dsv3-plan (pure arithmetic over `dsv3_config`, no torch; also installable
alone with its `dsv3-plan` command); this registers its options as a `dsv3` subcommand. The arithmetic and
the scratch model are in docs/planner.md.
"""

from __future__ import annotations

import argparse

from dsv3_model.cli.errors import UsageError
from dsv3_plan.cli import OptionError, add_arguments, run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("plan", help="will a layout fit a device, and how fast can a step be")
    add_arguments(p)
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except OptionError as err:
        raise UsageError(str(err)) from err

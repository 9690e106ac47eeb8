"""`dsv3_model.cli.main`'s error contract in-process: what reaches the user for each kind of failure."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from dsv3_config import ConfigError
from dsv3_model.cli import plan_command
from dsv3_model.cli.main import main

PLAN = ["plan", "--preset", "tiny", "--tp", "1"]


def _raising(error: BaseException):
    def handler(args: argparse.Namespace) -> int:
        raise error

    return handler


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    monkeypatch.setattr(plan_command, "_plan", _raising(KeyboardInterrupt()))
    assert main(PLAN) == 130
    assert capsys.readouterr().err == "dsv3 plan: interrupted\n"


def test_a_message_of_several_lines_becomes_one(monkeypatch, capsys):
    monkeypatch.setattr(plan_command, "_plan", _raising(ConfigError("config.json: 2 problems\n  a: bad\n\n  b: worse")))
    assert main(PLAN) == 1
    assert capsys.readouterr().err == "dsv3 plan: error: config.json: 2 problems; a: bad; b: worse\n"


def test_a_usage_error_repeats_the_command_usage_not_the_top_level_one(capsys):
    assert main(["plan", "--preset", "tiny", "--tp", "4", "--ep", "3"]) == 2
    usage, line = capsys.readouterr().err.strip().split("\ndsv3 plan: error: ")
    assert usage.startswith("usage: dsv3 plan [-h]")
    assert line == "--ep 3 must divide --tp 4 (each expert group has tp/ep ranks)"


def test_other_exceptions_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(plan_command, "_plan", _raising(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        main(PLAN)


def test_output_cut_short_by_its_reader_is_silent():
    """`dsv3 plan ... | head -1`: the reader has gone before the first write (its end of the pipe is closed
    before the command starts), so the write fails with EPIPE; no error message, exit 141."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dsv3_model.cli.main", *PLAN, "--seq-len", "64", "--json"],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_fd)
    assert (result.returncode, result.stderr) == (141, "")

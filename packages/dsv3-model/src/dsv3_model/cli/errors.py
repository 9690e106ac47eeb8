"""How the `dsv3` command reports a user's mistake: one line, no traceback, a meaningful exit status.

`UsageError` is a bad option or argument (exit 2, as argparse does); `ConfigError`, `CheckpointError`
and `DataError` are bad data (exit 1). `--debug` before the command, or `DSV3_DEBUG=1`, also shows the
traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """An option or argument that no run could accept (`--tp 0`, a prompt id outside the vocabulary)."""


class DataError(Exception):
    """Bad data that is neither a config nor a checkpoint (a tokenizer file that does not load)."""


USAGE_EXIT = 2
DATA_EXIT = 1
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports it
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE

"""Argparse `type=` callables shared by every `dsv3` command: each option is checked while parsing.

A bad value is then argparse's own one-line error (`dsv3 CMD: error: argument --top-p: ...`, exit 2)
before any module that needs torch is imported and before any file is read. The rules that need the
model (prompt ids against the vocabulary, positions against `max_position_embeddings`) or two options at
once (`--ep` dividing `--tp`) live in the handlers and raise `UsageError`, also before any weight is read.

No torch here: `dsv3 config` and `dsv3 plan` never import it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from dsv3_config import PRESETS
from dsv3_model.cli.errors import UsageError

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's range, from 0
INT64_MAX = 2**63 - 1  # token ids and lengths are int64 tensors
# The smallest temperature whose float32 division cannot turn the largest logit into 0/0 (float32's
# smallest normal, torch.finfo(torch.float32).tiny); 0 means greedy.
MIN_TEMPERATURE = 1.1754943508222875e-38


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:  # also an integer of more than 4300 digits
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text[:40]!r}")
    return value


def int_in(low: int, high: int = INT64_MAX, hint: str = "") -> Callable[[str], int]:
    """An integer `low <= n <= high`; `hint` says what the bound means."""

    def parse(text: str) -> int:
        value = _parse_int(text)
        if not low <= value <= high:
            bound = f">= {low}" if high == INT64_MAX else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}{hint}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, *, low_open: bool, high: float = math.inf, hint: str = "") -> Callable[[str], float]:
    """A finite number above `low` (`low_open`: strictly) and at most `high`."""

    def parse(text: str) -> float:
        value = _parse_float(text)
        if value < low or (low_open and value == low) or value > high:
            left = "(" if low_open else "["
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            if high != math.inf:
                bound = f"in {left}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}{hint}, got {text.strip()}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
seed = int_in(0, SEED_MAX)
positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0, low_open=False)
top_p = float_in(0.0, low_open=True, high=1.0, hint=" (1 keeps every token)")


def temperature(text: str) -> float:
    """0 (greedy) or a finite temperature large enough that sampling cannot divide a logit into 0/0."""
    value = _parse_float(text)
    if value < 0 or 0 < value < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(
            f"must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:.3g}, got {text.strip()}"
        )
    return value


def non_empty_text(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty prompt: give some text, or token ids with --prompt-ids")
    return text


def prompt_ids(text: str) -> list[list[int]]:
    """`1,2,3` or `1,2;3,4` (a batch): every id an integer >= 0, no empty prompt, no empty id."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty prompt: give comma-separated token ids, e.g. 1,2,3")
    prompts = []
    for row, part in enumerate(text.split(";"), 1):
        where = f" of prompt {row}" if ";" in text else ""
        if not part.strip():
            raise argparse.ArgumentTypeError(f"prompt {row} of the batch is empty (';' separates prompts)")
        ids = []
        for column, token in enumerate(part.split(","), 1):
            if not token.strip():
                raise argparse.ArgumentTypeError(f"id {column}{where} is empty (two commas, or one at an end?)")
            try:
                value = int(token.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(f"id {column}{where} is not an integer: {token[:40]!r}") from None
            if not 0 <= value <= INT64_MAX:
                raise argparse.ArgumentTypeError(f"id {column}{where} must be >= 0, got {value}")
            ids.append(value)
        prompts.append(ids)
    return prompts


def existing_directory(text: str) -> Path:
    """A directory that exists (a checkpoint to read), so a typo fails before anything is imported."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; expected a checkpoint directory")
    return path


def existing_path(text: str) -> Path:
    """A `config.json` or a model directory that exists."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {text!r}")
    return Path(text)


def preset_or_config(text: str) -> str:
    """A preset name, or a `config.json` / model directory that exists (read later, by the command)."""
    if text in PRESETS or Path(text).exists():
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing config.json or directory"
    )


def check_ep_divides_tp(tp: int, ep: int) -> None:
    """Expert parallelism splits the tp ranks into ep groups of tp/ep (NxDI's moe_tp_degree)."""
    if tp % ep:
        raise UsageError(f"--ep {ep} must divide --tp {tp} (each expert group has tp/ep ranks)")


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def byte_size(text: str) -> int:
    """`1GB`, `1.5G`, `512MiB`, `1048576`: a number of bytes >= 1, powers of 1024 whichever spelling
    (memory is sized in GiB; `1GB` meaning 10^9 would surprise nobody's RAM)."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a size like 1GB, 512MiB or 4096, got {text[:40]!r}")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text.strip()}")
    return value


def file_in_existing_directory(text: str) -> Path:
    """A file to write, in a directory that exists (written under a temporary name, then renamed)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    return path

"""Reading a `config.json` that may be anything: every failure becomes one `ConfigError` line naming the
file (and the key, where there is one).

JSON itself has no NaN or infinity, but Python's `json` reads the tokens `NaN`, `Infinity` and `-Infinity`;
they, and integers too long for Python's int-to-str limit (4300 digits, which would otherwise raise a
ValueError from inside `json`), are read as markers and reported with their key path. Nesting deeper than
the interpreter's recursion limit is reported as such instead of a RecursionError.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dsv3_config.errors import ConfigError

# Any integer this long is beyond int64 (19 digits) already; keeping it as text avoids the conversion limit.
MAX_INT_DIGITS = 40


class _Rejected:
    """A JSON value no config field can hold, kept with the reason until its key path is known."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_int(text: str) -> int | _Rejected:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Rejected(f"an integer with {len(text.lstrip('-'))} digits, beyond int64")
    return int(text)


def _parse_constant(token: str) -> _Rejected:
    return _Rejected(f"{token} is not a number (JSON has no NaN or infinity)")


def read_json_object(path: Path) -> dict[str, Any]:
    """The top-level JSON object of `path`; raises `ConfigError` for anything else."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None
    try:
        raw = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, got a JSON {_json_type(raw)}")
    problem = first_unrepresentable(raw)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    return raw


def first_unrepresentable(raw: dict[str, Any]) -> str | None:
    """`"key.path: reason"` for the first NaN, infinity or over-long integer anywhere in `raw`, else None.

    Iterative (an explicit stack), so a deeply nested dict passed in directly cannot exhaust recursion.
    """
    stack: list[tuple[str, Any]] = [(str(key), value) for key, value in raw.items()]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _Rejected):
            return f"{where}: {value.reason}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where}: {value} is not a finite number"
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * MAX_INT_DIGITS:
            return f"{where}: an integer of {value.bit_length()} bits, beyond int64"
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}", item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")

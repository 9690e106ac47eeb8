"""The one error type of dsv3-config: a configuration that cannot describe a runnable model.

A `ValueError`, so callers that validate input generically still catch it. The message is one line that
names the file and the field (`num_hidden_layers`, `rope_scaling.factor`, ...) and says what is wrong.
"""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """A `config.json`, preset name or config dict that dsv3 (and the reference implementation) cannot run."""


def one_line(err: ValidationError) -> str:
    """pydantic's errors as `field.path: message; ...` on one line, without echoing the input values
    (an input can be megabytes, or an int too long for Python's int-to-str limit). Union members' tags
    (`constrained-int`, `list[...]`) are dropped from the path; their messages are joined with "or"."""
    by_field: dict[str, list[str]] = {}
    for detail in err.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in detail["loc"] if isinstance(part, int) or str(part).isidentifier())
        message = " ".join(str(detail["msg"]).removeprefix("Value error, ").split())
        messages = by_field.setdefault(where, [])
        if message not in messages:
            messages.append(message)
    return "; ".join(f"{where}: {' or '.join(m)}" if where else " or ".join(m) for where, m in by_field.items())

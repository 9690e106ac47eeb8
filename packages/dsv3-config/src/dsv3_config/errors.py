"""The one error type of dsv3-config: a configuration that cannot describe a runnable model.

A `ValueError`, so callers that validate input generically still catch it. The message is one line that
names the file and the field (`num_hidden_layers`, `rope_scaling.factor`, ...) and says what is wrong.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A `config.json`, preset name or config dict that dsv3 (and the reference implementation) cannot run."""

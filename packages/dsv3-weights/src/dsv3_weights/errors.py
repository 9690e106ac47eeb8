"""The one error type of dsv3-weights: a checkpoint that is not what it must be.

A `ValueError` so callers that validate input generically still catch it; the message always names the
file and, where one is involved, the tensor.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file, index or tensor is missing, truncated, corrupt or inconsistent with its config."""

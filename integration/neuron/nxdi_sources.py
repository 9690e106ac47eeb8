"""Test support: put the NxD/NxDI source checkouts named by `DSV3_NXD_SRC` / `DSV3_NXDI_SRC` on the path,
shared by the CPU suite (integration/neuron) and the trace suite (integration/neuron_trace)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SOURCE_VARIABLES = ("DSV3_NXD_SRC", "DSV3_NXDI_SRC")
NXDI_MISSING = (
    "neuronx_distributed_inference is not importable: set DSV3_NXD_SRC and DSV3_NXDI_SRC to the `src` folders "
    "of aws-neuron/neuronx-distributed and aws-neuron/neuronx-distributed-inference checkouts "
    "(integration/neuron/README.md)"
)


def add_sources(*support_dirs: Path) -> None:
    """Prepend `support_dirs` and the source folders to `sys.path`, and export them through `PYTHONPATH`
    for worker processes (torchrun); a variable naming a missing folder is a usage error."""
    added = []
    for variable in SOURCE_VARIABLES:
        value = os.environ.get(variable)
        if not value:
            continue
        if not Path(value).is_dir():
            raise pytest.UsageError(f"{variable}={value!r} is not a directory")
        added.append(value)
    paths = [*(str(path) for path in support_dirs), *added]
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])

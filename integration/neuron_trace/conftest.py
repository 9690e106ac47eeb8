"""The trace suite's setup: torch_xla first (its `__init__` probes `libneuronxla`, which a stand-in would
answer wrongly), then the NxD/NxDI sources and the CPU suite's stand-ins for the other Neuron modules.
Every test skips with one reason where torch_xla or NxDI is not importable (`nox -s neuron_trace`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

NEURON_SUITE = Path(__file__).parent.parent / "neuron"
TORCH_XLA_MISSING = "torch_xla is not importable (run `nox -s neuron_trace`: torch 2.9 + torch_xla 2.9)"


def _skip_reason() -> str | None:
    if importlib.util.find_spec("torch_xla") is None:
        return TORCH_XLA_MISSING
    if importlib.util.find_spec("neuronx_distributed_inference") is None:
        import nxdi_sources

        return nxdi_sources.NXDI_MISSING
    return None


def pytest_configure(config: pytest.Config) -> None:
    sys.path[:0] = [str(Path(__file__).parent), str(NEURON_SUITE)]
    import nxdi_sources

    nxdi_sources.add_sources()
    os.environ.pop("NXD_CPU_MODE", None)  # the XLA route: NxD's collectives lower to HLO collectives
    if _skip_reason() is None:
        import neuron_stand_ins
        import torch_xla  # noqa: F401  (before the stand-ins)

        neuron_stand_ins.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is not None:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            item.add_marker(skip)

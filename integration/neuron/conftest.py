"""The NxDI CPU suite's setup: NxD/NxDI sources on the path, stand-ins for the compiled Neuron
modules, and one skip reason for every test where NxDI is not importable (CI has no NxDI).

Sources: `DSV3_NXD_SRC` and `DSV3_NXDI_SRC` name the `src` folders of aws-neuron/neuronx-distributed
and aws-neuron/neuronx-distributed-inference checkouts (or install both with `--no-deps`). They are
prepended to `sys.path` here and exported through `PYTHONPATH` for the torchrun workers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _add_sources() -> None:
    import sys

    sys.path.insert(0, str(HERE))
    import nxdi_sources

    nxdi_sources.add_sources(HERE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "neuron_device: needs a Neuron host (nox -s neuron_integration)")
    config.addinivalue_line("markers", "slow: large or slow cases; CI runs them once")
    _add_sources()
    if importlib.util.find_spec("neuronx_distributed_inference") is not None:
        import harness
        import neuron_stand_ins

        neuron_stand_ins.install()
        # In-process world-size-1 runs rendezvous on MASTER_PORT (NxDI `to_cpu()` defaults it to 29500).
        os.environ.setdefault("MASTER_PORT", str(harness.free_port()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("neuronx_distributed_inference") is None:
        import nxdi_sources

        skip = pytest.mark.skip(reason=nxdi_sources.NXDI_MISSING)
        for item in items:
            item.add_marker(skip)
        return
    import neuron_stand_ins

    stood_in = neuron_stand_ins.install()  # idempotent: what is stood in here
    if stood_in:
        skip_device = pytest.mark.skip(reason=f"needs a Neuron host; stand-ins here for {', '.join(stood_in)}")
        for item in items:
            if "neuron_device" in item.keywords:
                item.add_marker(skip_device)

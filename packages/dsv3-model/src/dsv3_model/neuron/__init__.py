"""The NxDI (AWS Neuron) adapter: dsv3's layers as an NxDI causal LM (`dsv3-model[neuron]`).

Entry points: `NeuronDsv3ForCausalLM` (application class), `Dsv3InferenceConfig` /
`Dsv3NeuronConfig`, `register()` (adds the model to NxDI's model-type tables for `inference_demo`
and vLLM's Neuron plugin), `write_per_rank_files` (`dsv3 shard`). Names are resolved on first use:
the checkpoint tools (`state_dict`, `shard_plan`, `per_rank_files`) are pure dsv3 code and import
without NxD/NxDI, while the model classes import NxD/NxDI. Nothing outside this subpackage imports
it, so `import dsv3_model` never needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CONTRIB_COMPILER_ARGS": "model",
    "MODEL_TYPE_NAMES": "registry",
    "Dsv3InferenceConfig": "config",
    "Dsv3NeuronConfig": "config",
    "Dsv3Router": "router",
    "LatentBlockKVCacheManager": "kv_cache",
    "LatentKVCacheManager": "kv_cache",
    "NeuronDsv3ForCausalLM": "model",
    "NeuronDsv3Model": "model",
    "convert_hf_to_neuron_state_dict": "state_dict",
    "expected_keys": "state_dict",
    "nxdi_shard_plan": "shard_plan",
    "register": "registry",
    "write_per_rank_files": "per_rank_files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

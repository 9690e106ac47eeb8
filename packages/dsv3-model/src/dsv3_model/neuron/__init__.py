"""The NxDI (AWS Neuron) adapter: dsv3's layers as an NxDI causal LM (`dsv3-model[neuron]`).

Entry points: `NeuronDsv3ForCausalLM` (application class), `Dsv3InferenceConfig` /
`Dsv3NeuronConfig`, `register()` (adds the model to NxDI's model-type tables for `inference_demo`
and vLLM's Neuron plugin). Every module here imports NxD/NxDI (resolved on first use); the checkpoint
code NxDI calls or loads (`convert_hf_to_neuron_state_dict`, `nxdi_shard_plan`, `write_per_rank_files`
for `dsv3 shard`) is pure dsv3 code in `dsv3_model.nxdi_checkpoint`, re-exported here by name. Nothing
outside this subpackage imports it, so `import dsv3_model` never needs NxD.
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
    "convert_hf_to_neuron_state_dict": "dsv3_model.nxdi_checkpoint.state_dict",
    "expected_keys": "dsv3_model.nxdi_checkpoint.neuron_tensors",
    "nxdi_shard_plan": "dsv3_model.nxdi_checkpoint.shard_plan",
    "register": "registry",
    "write_per_rank_files": "dsv3_model.nxdi_checkpoint.per_rank_files",
}

__all__ = sorted(_EXPORTS)
_NEURON_PACKAGES = ("neuronx_distributed", "neuronx_distributed_inference", "torch_neuronx")
INSTALL_HINT = (
    "dsv3_model.neuron needs NxDI (neuronx-distributed-inference) from the Neuron SDK's package repository, "
    "not PyPI (PyPI's neuronx-distributed* are placeholders): "
    'pip install "dsv3-model[neuron]" --extra-index-url https://pip.repos.neuron.amazonaws.com'
)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        found = importlib.import_module(module if "." in module else f"{__name__}.{module}")
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in _NEURON_PACKAGES:
            raise ModuleNotFoundError(f"{INSTALL_HINT} ({err.name} is missing)", name=err.name) from err
        raise
    return getattr(found, name)

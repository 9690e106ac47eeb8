"""The NxDI (AWS Neuron) adapter: dsv3's layers as an NxDI causal LM (`dsv3-model[neuron]`).

Imports NxD/NxDI; nothing outside this subpackage imports it, so `import dsv3_model` never needs them.
Entry points: `NeuronDsv3ForCausalLM` (application class), `Dsv3InferenceConfig` /
`Dsv3NeuronConfig`, `register()` (adds the model to NxDI's model-type tables for `inference_demo`
and vLLM's Neuron plugin).
"""

from dsv3_model.neuron.config import Dsv3InferenceConfig, Dsv3NeuronConfig
from dsv3_model.neuron.kv_cache import LatentKVCacheManager
from dsv3_model.neuron.model import CONTRIB_COMPILER_ARGS, NeuronDsv3ForCausalLM, NeuronDsv3Model
from dsv3_model.neuron.registry import MODEL_TYPE_NAMES, register
from dsv3_model.neuron.router import Dsv3Router
from dsv3_model.neuron.shard_plan import nxdi_shard_plan
from dsv3_model.neuron.state_dict import convert_hf_to_neuron_state_dict, expected_keys

__all__ = [
    "CONTRIB_COMPILER_ARGS",
    "MODEL_TYPE_NAMES",
    "Dsv3InferenceConfig",
    "Dsv3NeuronConfig",
    "Dsv3Router",
    "LatentKVCacheManager",
    "NeuronDsv3ForCausalLM",
    "NeuronDsv3Model",
    "convert_hf_to_neuron_state_dict",
    "expected_keys",
    "nxdi_shard_plan",
    "register",
]

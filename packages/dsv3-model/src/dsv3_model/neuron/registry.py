"""Registering the dsv3 NxDI model under the names NxDI's tools look up, at run time, without edits to
installed files.

- vLLM's Neuron plugin imports `neuronx_distributed_inference.utils.constants.MODEL_TYPES` and looks
  up `architectures[0]` split at the first "For", the model part lowercased, the task kebab-cased:
  `DeepseekV3ForCausalLM` -> `MODEL_TYPES["deepseekv3"]["causal-lm"]` (vllm-project/vllm-neuron
  `vllm_neuron/worker/neuronx_distributed_model_loader.py:39`, `:639-659`). Kimi-K2 and Moonlight declare
  `DeepseekV3ForCausalLM` too; V2/V2-Lite/V2.5 declare `DeepseekV2ForCausalLM` -> "deepseekv2". The
  `model_type` spellings are added for tools keyed by them (the DeepSeek fork's `inference_demo`).
- `inference_demo --model-type` reads its own module-level `MODEL_TYPES` (NxDI
  `src/neuronx_distributed_inference/inference_demo.py:54-63`, `:75`, `:798`); `python -m
  dsv3_model.neuron.inference_demo ...` registers and then runs NxDI's `main()`.
- `vllm_plugin` is the `vllm.general_plugins` entry point (dsv3-model's pyproject): vLLM calls every
  such entry point in each of its processes before it builds a model (`VLLM_PLUGINS`, when set, must
  name it), so the lookup above finds the dsv3 class in the engine and worker processes.

Both dicts are mutated in place, so modules that already imported them see the entries; assigning the
same class again is a no-op, so registering twice is safe.
"""

from __future__ import annotations

import importlib.util
import sys

from dsv3_model.neuron.kimi_config import register_kimi_k2_config

MODEL_TYPE_NAMES = ("deepseek_v3", "deepseekv3", "deepseek_v2", "deepseekv2", "kimi_k2")
TASK = "causal-lm"
_NXDI = "neuronx_distributed_inference"
_DEMO_MODULE = "neuronx_distributed_inference.inference_demo"


def register() -> tuple[str, ...]:
    """Add the dsv3 causal LM to NxDI's model-type tables and `kimi_k2` to `AutoConfig`; returns the names."""
    from neuronx_distributed_inference.utils import constants

    from dsv3_model.neuron.model import NeuronDsv3ForCausalLM

    tables = [constants.MODEL_TYPES]
    demo = sys.modules.get(_DEMO_MODULE)
    if demo is not None:
        tables.append(demo.MODEL_TYPES)
    for table in tables:
        for name in MODEL_TYPE_NAMES:
            table.setdefault(name, {})[TASK] = NeuronDsv3ForCausalLM
    register_kimi_k2_config()
    return MODEL_TYPE_NAMES


def vllm_plugin() -> None:
    """vLLM `general_plugins` entry point: `register()` where NxDI is installed, nothing elsewhere.

    vLLM calls it on every platform (a GPU host with dsv3-model installed too), so without NxDI it returns
    silently; an NxDI that is installed but fails to import raises, as serving on it would.
    """
    if importlib.util.find_spec(_NXDI) is None:
        return
    register()

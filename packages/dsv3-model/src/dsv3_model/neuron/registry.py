"""Registering the dsv3 NxDI model under the names NxDI's tools look up, at run time, without edits to
installed files.

- vLLM's Neuron plugin imports `neuronx_distributed_inference.utils.constants.MODEL_TYPES` and looks
  up `architectures[0]` split at "For" and lowercased: `DeepseekV3ForCausalLM` -> "deepseekv3"
  (vllm-project/vllm-neuron `vllm_neuron/worker/neuronx_distributed_model_loader.py:39`, `:639-659`).
  Kimi-K2 and Moonlight declare `DeepseekV3ForCausalLM` too; V2/V2-Lite declare `DeepseekV2ForCausalLM`.
- `inference_demo --model-type` reads its own module-level `MODEL_TYPES` (NxDI
  `src/neuronx_distributed_inference/inference_demo.py:54-63`, `:75`, `:798`); `python -m
  dsv3_model.neuron.inference_demo ...` registers and then runs NxDI's `main()`.

Both dicts are mutated in place, so modules that already imported them see the entries.
"""

from __future__ import annotations

import sys

MODEL_TYPE_NAMES = ("deepseek_v3", "deepseekv3", "deepseek_v2", "deepseekv2", "kimi_k2")
_DEMO_MODULE = "neuronx_distributed_inference.inference_demo"


def register() -> tuple[str, ...]:
    """Add the dsv3 causal LM to NxDI's model-type tables; returns the names registered."""
    from neuronx_distributed_inference.utils import constants

    from dsv3_model.neuron.model import NeuronDsv3ForCausalLM

    tables = [constants.MODEL_TYPES]
    demo = sys.modules.get(_DEMO_MODULE)
    if demo is not None:
        tables.append(demo.MODEL_TYPES)
    for table in tables:
        for name in MODEL_TYPE_NAMES:
            table[name] = {"causal-lm": NeuronDsv3ForCausalLM}
    return MODEL_TYPE_NAMES

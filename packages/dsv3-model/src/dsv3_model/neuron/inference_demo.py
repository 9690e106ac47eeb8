"""`python -m dsv3_model.neuron.inference_demo --model-type deepseek_v3 --task-type causal-lm run ...`:
NxDI's own `inference_demo` with the dsv3 model registered first (its flags and behaviour unchanged)."""

from __future__ import annotations

import importlib

from dsv3_model.neuron.registry import register


def main() -> None:
    demo = importlib.import_module("neuronx_distributed_inference.inference_demo")
    register()
    demo.main()


if __name__ == "__main__":
    main()

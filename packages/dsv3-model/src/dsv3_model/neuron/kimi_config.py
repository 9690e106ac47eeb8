"""Kimi-K2's `config.json` readable by `AutoConfig.from_pretrained(path)` without remote code.

NxDI's `load_pretrained_config` calls `AutoConfig.from_pretrained(path)` with no `trust_remote_code`
(NxDI `src/neuronx_distributed_inference/utils/hf_adapter.py:49`), and vLLM's Neuron plugin builds every
model's config through it (vllm-project/vllm-neuron `vllm_neuron/worker/neuronx_distributed_model_loader.py:160-167`).
Kimi-K2 declares `model_type: kimi_k2` with an `auto_map` to its own `configuration_deepseek.py`, a type
transformers does not know, so that call raises "trust_remote_code". Kimi's configuration and modeling
files are DeepSeek-V3's (the reason `dsv3_config` reads `kimi_k2` with V3's defaults), so registering
transformers' `DeepseekV3Config` under the name `kimi_k2` reads the file as its own code does: with a
local class registered, `AutoConfig` no longer needs the remote one (transformers
`models/auto/configuration_auto.py`: `has_local_code` makes `trust_remote_code` default to False).
"""

from __future__ import annotations

KIMI_K2 = "kimi_k2"


def register_kimi_k2_config() -> bool:
    """Register `kimi_k2` with `AutoConfig` unless transformers already knows it; True if registered now.

    The class is built here, not at import, so importing this module needs no transformers.
    """
    from transformers import AutoConfig, DeepseekV3Config
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if KIMI_K2 in CONFIG_MAPPING:
        return False
    kimi_config = type("KimiK2Config", (DeepseekV3Config,), {"model_type": KIMI_K2, "__module__": __name__})
    AutoConfig.register(KIMI_K2, kimi_config)
    return True

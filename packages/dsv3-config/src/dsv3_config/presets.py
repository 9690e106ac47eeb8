"""Named configurations: `tiny` and `medium` for tests, demos and benchmarks, plus the published models.

`tiny` turns every feature on (q_lora, YaRN, dense and MoE layers, several expert groups with top-k
groups, a shared expert, FP8 with a small block size so edge blocks are partial, an MTP layer) at a
size where a CPU test runs in milliseconds. The published presets are not transcribed: each reads the
model's own `config.json` from the Hugging Face hub, shipped verbatim as package data.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from dsv3_config.errors import ConfigError
from dsv3_config.hf_io import load_config
from dsv3_config.model_config import ModelConfig

_V3_YARN = {
    "type": "yarn",
    "factor": 40,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}
_FP8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}

_TINY: dict[str, Any] = {
    "model_type": "deepseek_v3",
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 160,
    "moe_intermediate_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "n_shared_experts": 1,
    "n_routed_experts": 16,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 32,
    "q_lora_rank": 48,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 16,
    "v_head_dim": 12,
    "topk_method": "noaux_tc",
    "n_group": 4,
    "topk_group": 2,
    "num_experts_per_tok": 4,
    "moe_layer_freq": 1,
    "first_k_dense_replace": 1,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000,
    "rope_scaling": {**_V3_YARN, "factor": 4.0, "original_max_position_embeddings": 256},
    "num_nextn_predict_layers": 1,
    "quantization_config": {**_FP8, "weight_block_size": [32, 32]},
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
}

_MEDIUM: dict[str, Any] = {
    **_TINY,
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "moe_intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "n_routed_experts": 64,
    "kv_lora_rank": 128,
    "q_lora_rank": 384,
    "qk_rope_head_dim": 32,
    "qk_nope_head_dim": 64,
    "v_head_dim": 64,
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 6,
    "first_k_dense_replace": 1,
    "rope_scaling": {**_V3_YARN, "original_max_position_embeddings": 4096},
    "max_position_embeddings": 163840,
    "num_nextn_predict_layers": 0,
    "quantization_config": _FP8,
}

# Each published preset is the model's own config.json, shipped verbatim in `dsv3_config/published/`.
# DeepSeek-V3-0324 has DeepSeek-V3's architecture (its hub config.json differs only in bookkeeping such as
# transformers_version), so it reads deepseek-v3.config.json. There is no "deepseek-v2" preset: the 236B
# DeepSeek-V2's own config.json is not among the published files, and deepseek-v2.5 (the same architecture)
# is; use that.
PUBLISHED_FILES: dict[str, str] = {
    "deepseek-v3": "deepseek-v3.config.json",
    "deepseek-v3-0324": "deepseek-v3.config.json",
    "deepseek-r1": "deepseek-r1.config.json",
    "deepseek-v2.5": "deepseek-v2.5.config.json",
    "deepseek-v2-lite": "deepseek-v2-lite.config.json",
    "kimi-k2": "kimi-k2-instruct.config.json",
    "moonlight": "moonlight-16b-a3b.config.json",
}

_EMBEDDED: dict[str, dict[str, Any]] = {"tiny": _TINY, "medium": _MEDIUM}

PRESETS: tuple[str, ...] = (*_EMBEDDED, *PUBLISHED_FILES)


def published_config(file_name: str) -> dict[str, Any]:
    """The verbatim JSON of one published `config.json` shipped as package data."""
    text = resources.files("dsv3_config").joinpath("published", file_name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def preset_dict(name: str) -> dict[str, Any]:
    """The HF dict a preset is made from; `ConfigError` naming the known presets for any other name."""
    if name in _EMBEDDED:
        return dict(_EMBEDDED[name])
    if name in PUBLISHED_FILES:
        return published_config(PUBLISHED_FILES[name])
    raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")


def preset(name: str) -> ModelConfig:
    """The named configuration, validated as a loaded `config.json` would be."""
    if not isinstance(name, str):
        raise ConfigError(f"preset name must be a string, got {type(name).__name__}")
    return load_config(preset_dict(name))

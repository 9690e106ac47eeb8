"""What a `config.json` that omits a key means: the value the reference implementation of its `model_type`
assumes, never a default of dsv3's own.

Sources, checked against transformers 4.57.6 and 5.24.0:
- `DeepseekV3Config` / `DeepseekV2Config` `__init__` defaults (identical in 4.57 and 5.x except V2's
  `vocab_size`: 32000 in 4.57, 102400 in 5.x; dsv3 follows 4.57, the version it pins and matches numerically).
- What the modeling code does where the config class has no such key: transformers' DeepseekV3 always routes
  with sigmoid scores and the `noaux_tc` bias-corrected group top-k (it reads neither `scoring_func` nor
  `topk_method`, and `DeepseekV3ForCausalLM.save_pretrained` writes neither); DeepseekV2 always scores with a
  softmax (no `scoring_func` key) and reads `topk_method` (default "greedy"). Neither reads
  `moe_layer_freq` (every layer from `first_k_dense_replace` on is MoE, i.e. frequency 1, DeepSeek's
  `configuration_deepseek.py` default too). Neither builds an MTP layer: a checkpoint without
  `num_nextn_predict_layers` has none (0). transformers 5.x's V3 config does default `num_mtp_layers` to 1
  but its model still ignores `model.layers.61.*`; dsv3 loads MTP tensors only where the checkpoint has them.
- `kimi_k2` is DeepSeek-V3's code (Kimi ships DeepSeek's `modeling_deepseek.py`), so it takes V3's values.

Keys a reference cannot run without stay required: V2's `num_experts_per_tok` (None in its config class,
`torch.topk(k=None)` fails), and `n_group` / `topk_group` under `group_limited_greedy` (None there, a
`view(..., None, ...)` fails). Under V2's plain `greedy` top-k, groups are not read; a missing or null
`n_group` / `topk_group` is then one group of all experts (1 / 1), which routes identically.
"""

from __future__ import annotations

from typing import Any

_V3_DEFAULTS: dict[str, Any] = {
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 256,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "norm_topk_prob": True,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    # modeling code, not the config class:
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "moe_layer_freq": 1,
    "num_nextn_predict_layers": 0,
}

_V2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "first_k_dense_replace": 0,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "routed_scaling_factor": 1.0,
    "topk_method": "greedy",
    "v_head_dim": 128,
    "norm_topk_prob": False,
    "moe_intermediate_size": 1407,
    # modeling code, not the config class:
    "scoring_func": "softmax",
    "moe_layer_freq": 1,
    "num_nextn_predict_layers": 0,
}

REFERENCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "deepseek_v3": _V3_DEFAULTS,
    "kimi_k2": _V3_DEFAULTS,
    "deepseek_v2": _V2_DEFAULTS,
}


def with_reference_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every omitted key set as the reference of its `model_type` assumes (unknown or missing
    `model_type`: unchanged, so validation names that field)."""
    model_type = data.get("model_type")
    defaults = REFERENCE_DEFAULTS.get(model_type) if isinstance(model_type, str) else None
    if defaults is None:
        return data
    out = {**defaults, **data}
    if out.get("num_key_value_heads") is None:  # both config classes: None means one KV head per head
        out["num_key_value_heads"] = out["num_attention_heads"]
    if model_type == "deepseek_v2" and out["topk_method"] == "greedy":
        for key in ("n_group", "topk_group"):
            if out.get(key) is None:
                out[key] = 1
    scaling = out.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("original_max_position_embeddings") is None:
        out["rope_scaling"] = {**scaling, "original_max_position_embeddings": out["max_position_embeddings"]}
    return out

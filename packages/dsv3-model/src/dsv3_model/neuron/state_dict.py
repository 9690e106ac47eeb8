"""HF checkpoint -> the key layout of `NeuronDsv3Model` (after NxDI strips the leading `model.`).

Attention, norms, embeddings, `lm_head`, dense MLPs and shared experts keep HF's names. MoE layers
are renamed to NxDI's `initialize_moe_module` layout (NXDI_CONTRACT.md section 8): `mlp.gate.weight`
-> `mlp.router.linear_router.weight`, `mlp.gate.e_score_correction_bias` ->
`mlp.router.e_score_correction_bias`, per-expert `gate_proj`/`up_proj` [I, H] -> one
`mlp.expert_mlps.mlp_op.gate_up_proj.weight` [E, H, 2I] (gate in `[..., :I]`), `down_proj` [H, I] ->
`mlp.expert_mlps.mlp_op.down_proj.weight` [E, I, H]. MTP layers (index >= num_hidden_layers) are
dropped; the `SPMDRank` vectors (`rank_util.rank`, each MoE layer's `expert_mlps.spmd_rank.rank`) are
added. FP8 block-quantized weights (`*.weight` + `*.weight_scale_inv`) are dequantized with
dsv3-weights into the NxDI dtype one tensor at a time. Expert tensors are popped as they are fused, so
the extra memory is one tensor, then one layer's experts. Every expected key is checked, because NxDI
loads with `strict=False`.

Shape legend: E routed experts, H hidden size, I expert intermediate size.
"""

from __future__ import annotations

from typing import Any

import torch

from dsv3_config import LayerKind, ModelConfig
from dsv3_mla import mla_shard_plan
from dsv3_weights.fp8 import dequantize_fp8_blocks

SCALE_SUFFIX = "_scale_inv"

EXPERTS = "mlp.expert_mlps.mlp_op"
# SPMDRank vectors of each MoE layer (ExpertMLPsV2's own; NxD's preshard hook writes the same values,
# NxD modules/moe/expert_mlps_v2.py:197-207, :1501-1513), relative to the layer.
SPMD_RANK_KEYS = ("mlp.expert_mlps.spmd_rank.rank",)


def convert_hf_to_neuron_state_dict(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Convert in place (and return) an HF DeepSeek state dict with `model.` already stripped."""
    cfg: ModelConfig = config.model_config()
    _dequantize_fp8(state_dict, cfg, config.neuron_config.torch_dtype)
    for key in [k for k in state_dict if _layer_index(k) >= cfg.num_hidden_layers]:
        del state_dict[key]  # MTP layers: not part of the causal LM
    for layer in range(cfg.num_hidden_layers):
        if cfg.layer_kind(layer) == LayerKind.MOE:
            _fuse_moe_layer(state_dict, cfg, f"layers.{layer}.")
    state_dict["rank_util.rank"] = torch.arange(config.neuron_config.tp_degree, dtype=torch.int32)
    for layer in range(cfg.num_hidden_layers):
        if cfg.layer_kind(layer) == LayerKind.MOE:
            for key in SPMD_RANK_KEYS:
                state_dict[f"layers.{layer}.{key}"] = torch.arange(config.neuron_config.world_size, dtype=torch.int32)
    missing = sorted(set(expected_keys(cfg)) - state_dict.keys())
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}")
    return state_dict


def _dequantize_fp8(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, dtype: torch.dtype) -> None:
    scale_keys = [key for key in state_dict if key.endswith(f"weight{SCALE_SUFFIX}")]
    if not scale_keys:
        return
    if cfg.quantization_config is None:
        raise ValueError(f"checkpoint has FP8 scales (e.g. {scale_keys[0]}) but the config has no quantization_config")
    block = cfg.quantization_config.weight_block_size
    for scale_key in scale_keys:
        weight_key = scale_key.removesuffix(SCALE_SUFFIX)
        if weight_key not in state_dict:
            raise KeyError(f"{scale_key} has no weight {weight_key}")
        scale_inv = state_dict.pop(scale_key)
        state_dict[weight_key] = dequantize_fp8_blocks(state_dict[weight_key], scale_inv, block, dtype)


def _layer_index(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if parts[0] == "layers" and len(parts) > 1 and parts[1].isdigit() else -1


def _fuse_moe_layer(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, prefix: str) -> None:
    gate = f"{prefix}mlp.gate."
    state_dict[f"{prefix}mlp.router.linear_router.weight"] = state_dict.pop(f"{gate}weight")
    if cfg.topk_method == "noaux_tc":
        state_dict[f"{prefix}mlp.router.e_score_correction_bias"] = state_dict.pop(f"{gate}e_score_correction_bias")

    def pop_stack(proj: str) -> torch.Tensor:
        return torch.stack(
            [state_dict.pop(f"{prefix}mlp.experts.{e}.{proj}.weight").T for e in range(cfg.n_routed_experts)]
        )

    gate_EHI, up_EHI = pop_stack("gate_proj"), pop_stack("up_proj")
    state_dict[f"{prefix}{EXPERTS}.gate_up_proj.weight"] = torch.cat([gate_EHI, up_EHI], dim=-1).contiguous()
    del gate_EHI, up_EHI
    state_dict[f"{prefix}{EXPERTS}.down_proj.weight"] = pop_stack("down_proj").contiguous()


def expected_keys(cfg: ModelConfig) -> list[str]:
    """Every tensor `NeuronDsv3Model` loads from a converted checkpoint (rank keys included)."""
    keys = ["embed_tokens.weight", "norm.weight", "lm_head.weight", "rank_util.rank"]
    attention = [f"self_attn.{name}" for name in mla_shard_plan(cfg)]
    for layer in range(cfg.num_hidden_layers):
        prefix = f"layers.{layer}."
        keys += [f"{prefix}{name}" for name in attention]
        keys += [f"{prefix}input_layernorm.weight", f"{prefix}post_attention_layernorm.weight"]
        if cfg.layer_kind(layer) == LayerKind.DENSE:
            keys += [f"{prefix}mlp.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
            continue
        keys += [f"{prefix}mlp.router.linear_router.weight", f"{prefix}{EXPERTS}.gate_up_proj.weight"]
        keys += [f"{prefix}{EXPERTS}.down_proj.weight", *(f"{prefix}{key}" for key in SPMD_RANK_KEYS)]
        if cfg.topk_method == "noaux_tc":
            keys.append(f"{prefix}mlp.router.e_score_correction_bias")
        if cfg.n_shared_experts:
            keys += [f"{prefix}mlp.shared_experts.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
    return keys

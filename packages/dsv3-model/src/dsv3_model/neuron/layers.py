"""Decoder layers of the NxDI model: MLA, then dsv3-moe's dense SwiGLU MLP with NxD parallel linears injected (first
`first_k_dense_replace` layers) or NxDI's MoE (`initialize_moe_module`: `ExpertMLPsV2` routed experts, BF16 or NxD's
FP8 blockwise expert layers; `SharedExperts`) with the dsv3 router swapped in (weight split by expert, logits and
selection in fp32).

The layer follows NxDI's decoder-layer contract (docs/nxdi-contract.md section 5): it takes NxDI's
keyword arguments (and ignores the ones it does not use), and returns `(hidden, (k, v), cos, sin,
residual)` with the cache entries of `NeuronLatentAttention`. Submodule names are HF's
(`self_attn`, `mlp`, `input_layernorm`, `post_attention_layernorm`, dense `gate_proj`/`up_proj`/
`down_proj`), so only the MoE keys need renaming (`state_dict.py`).

Shape legend: B batch, S tokens, D hidden size.
"""

from __future__ import annotations

from typing import Any

import torch
from neuronx_distributed_inference.modules.moe_v2 import initialize_moe_module
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_config import LayerKind, ModelConfig
from dsv3_config.inventory import mlp_tensors
from dsv3_model.neuron.attention import NeuronLatentAttention, nxd_linear_factory
from dsv3_model.neuron.config import Dsv3InferenceConfig
from dsv3_model.neuron.fp8_experts import quantize_routed_experts
from dsv3_model.neuron.fp8_linears import Fp8Linears, quantize_shared_experts
from dsv3_model.neuron.router import Dsv3Router
from dsv3_moe import SwiGLUMLP, mlp_shard_plan


def dense_mlp(cfg: ModelConfig, dtype: torch.dtype, fp8_linears: bool = False) -> nn.Module:
    """dsv3-moe's `SwiGLUMLP` with NxD parallel linears placed by `mlp_shard_plan`: gate/up column-parallel
    (no gather), down row-parallel (all-reduce); FP8 ones with `fp8_linears` (`fp8_linears.py`)."""
    fp8 = Fp8Linears.of(cfg, mlp_tensors(cfg, LayerKind.DENSE)) if fp8_linears else None
    factory = nxd_linear_factory(mlp_shard_plan(), dtype, fp8)
    return SwiGLUMLP(cfg.hidden_size, cfg.intermediate_size, linear_factory=factory)


def build_moe(config: Dsv3InferenceConfig, cfg: ModelConfig) -> nn.Module:
    """NxDI's MoE module with `Dsv3Router` in place of its `RouterTopK`.

    The fused TKG kernel module stays off: it keeps a reference to the original router. With FP8 experts
    (`dsv3_weights` `fp8-experts` or `fp8`), the routed-expert layers are NxD's quantized ones (`fp8_experts.py`);
    with `fp8` the shared experts' too (`fp8_linears.py`).
    """
    moe = initialize_moe_module(config=config, init_tkg_module=False)
    grid = config.fp8_expert_grid()
    if grid is not None:
        quantize_routed_experts(moe, grid)
    if config.fp8_linears() and moe.shared_experts is not None:
        quantize_shared_experts(moe.shared_experts, cfg)
    neuron_config = config.neuron_config
    moe.router = Dsv3Router(
        cfg, dtype=neuron_config.torch_dtype, sequence_parallel_enabled=neuron_config.sequence_parallel_enabled
    )
    moe.eval()
    return moe


class Dsv3DecoderLayer(nn.Module):
    def __init__(self, config: Dsv3InferenceConfig, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        dtype, fp8_linears = config.neuron_config.torch_dtype, config.fp8_linears()
        self.is_moe = cfg.layer_kind(layer_idx) == LayerKind.MOE
        self.self_attn = NeuronLatentAttention(
            cfg,
            tp_degree=config.neuron_config.tp_degree,
            dtype=dtype,
            padding_side=config.neuron_config.padding_side,
            fp8_linears=fp8_linears,
        )
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = build_moe(config, cfg) if self.is_moe else dense_mlp(cfg, dtype, fp8_linears)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None, None, None]:
        if attention_mask is None or position_ids is None:
            raise ValueError("Dsv3DecoderLayer needs attention_mask and position_ids (NxDI passes both)")
        attn_BSD, new_kv = self.self_attn(
            self.input_layernorm(hidden_states), position_ids, attention_mask, past_key_value
        )
        hidden_BSD = hidden_states + attn_BSD
        mlp_in_BSD = self.post_attention_layernorm(hidden_BSD)
        mlp_BSD = self.mlp(mlp_in_BSD)[0] if self.is_moe else self.mlp(mlp_in_BSD)
        return hidden_BSD + mlp_BSD, new_kv, None, None, None

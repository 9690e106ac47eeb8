"""Decoder layers of the NxDI model: MLA, then a dense SwiGLU MLP (first `first_k_dense_replace`
layers) or NxDI's MoE (`initialize_moe_module`: `ExpertMLPsV2` routed experts, `SharedExperts`) with
the fp32 dsv3 router swapped in.

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
from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear, RowParallelLinear
from neuronx_distributed_inference.modules.moe_v2 import initialize_moe_module
from torch import nn

from dsv3_config import LayerKind, ModelConfig
from dsv3_mla import RMSNorm
from dsv3_model.neuron.attention import NeuronLatentAttention
from dsv3_model.neuron.config import Dsv3InferenceConfig
from dsv3_model.neuron.router import Dsv3Router


class DenseMLP(nn.Module):
    """SwiGLU MLP: gate/up column-parallel (no gather), down row-parallel (all-reduce)."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_proj = ColumnParallelLinear(
            hidden_size, intermediate_size, bias=False, gather_output=False, dtype=dtype
        )
        self.up_proj = ColumnParallelLinear(
            hidden_size, intermediate_size, bias=False, gather_output=False, dtype=dtype
        )
        self.down_proj = RowParallelLinear(
            intermediate_size, hidden_size, bias=False, input_is_parallel=True, dtype=dtype
        )

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x_BSD)) * self.up_proj(x_BSD))


def build_moe(config: Dsv3InferenceConfig, cfg: ModelConfig) -> nn.Module:
    """NxDI's MoE module with `Dsv3Router` in place of its `RouterTopK`.

    The fused TKG kernel module stays off: it keeps a reference to the original router.
    """
    moe = initialize_moe_module(config=config, init_tkg_module=False)
    moe.router = Dsv3Router(cfg, sequence_parallel_enabled=config.neuron_config.sequence_parallel_enabled)
    moe.eval()
    return moe


class Dsv3DecoderLayer(nn.Module):
    def __init__(self, config: Dsv3InferenceConfig, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        dtype = config.neuron_config.torch_dtype
        self.is_moe = cfg.layer_kind(layer_idx) == LayerKind.MOE
        self.self_attn = NeuronLatentAttention(
            cfg,
            tp_degree=config.neuron_config.tp_degree,
            dtype=dtype,
            padding_side=config.neuron_config.padding_side,
        )
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = build_moe(config, cfg) if self.is_moe else DenseMLP(cfg.hidden_size, cfg.intermediate_size, dtype)

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

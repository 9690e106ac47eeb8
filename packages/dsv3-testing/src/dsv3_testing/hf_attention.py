"""Drive transformers' `DeepseekV3Attention` one sequence at a time, as a reference for MLA tests and
benchmarks: prefill (causal) and decode steps with a `DynamicCache`, positions from HF's own rotary.

Each sequence runs alone (batch 1, no padding), so the reference needs no padding mask at all.
transformers is imported lazily.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from dsv3_config import ModelConfig
from dsv3_testing.hf_reference import hf_config, transformers_major


def hf_attention(cfg: ModelConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A randomly initialised `DeepseekV3Attention` (layer 0, eager) with random RMSNorm weights too
    (HF initialises them to ones, which would hide a norm that is skipped)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    torch.manual_seed(seed)
    attn = DeepseekV3Attention(hf_config(cfg), layer_idx=0)
    with torch.no_grad():
        for name, param in attn.named_parameters():
            if name.endswith("layernorm.weight"):
                param.uniform_(0.5, 1.5)
    return attn.to(dtype).eval()


class HfAttentionRunner:
    """One sequence through an HF attention module: `prefill(hidden_1SD)`, then `decode(hidden_11D)`."""

    def __init__(self, attn: Any) -> None:
        from transformers import DynamicCache
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

        self.attn = attn
        self.rotary = DeepseekV3RotaryEmbedding(attn.config)
        self.cache = DynamicCache() if transformers_major() < 5 else DynamicCache(config=attn.config)
        params = inspect.signature(attn.forward).parameters
        self.cache_kwarg = "past_key_values" if "past_key_values" in params else "cache"
        self.length = 0

    def _run(self, hidden_1SD: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        seq = hidden_1SD.shape[1]
        positions = torch.arange(self.length, self.length + seq)[None]
        cos, sin = self.rotary(hidden_1SD, positions)
        kwargs = {self.cache_kwarg: self.cache, "cache_position": positions[0]}
        out = self.attn(hidden_states=hidden_1SD, position_embeddings=(cos, sin), attention_mask=mask, **kwargs)[0]
        self.length += seq
        return out

    @torch.no_grad()
    def prefill(self, hidden_1SD: torch.Tensor) -> torch.Tensor:
        if self.length:
            raise ValueError("prefill must come first")
        seq = hidden_1SD.shape[1]
        mask = torch.full((seq, seq), torch.finfo(hidden_1SD.dtype).min, dtype=hidden_1SD.dtype).triu(1)
        return self._run(hidden_1SD, mask[None, None])

    @torch.no_grad()
    def decode(self, hidden_11D: torch.Tensor) -> torch.Tensor:
        return self._run(hidden_11D, None)

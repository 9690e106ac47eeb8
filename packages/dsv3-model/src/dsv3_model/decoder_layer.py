"""A DeepSeek decoder layer and the multi-token-prediction (MTP) layer, with HF's names.

`DecoderLayer` takes its attention and MLP injected (dense SwiGLU for the first
`first_k_dense_replace` layers, DeepseekMoE after), so backends swap parts, not layers.

`MultiTokenPredictionLayer` is DeepSeek-V3's layer `num_hidden_layers` (61): a full MoE decoder block
plus `enorm`, `hnorm`, `eh_proj`, `shared_head.{norm, head}` and its own `embed_tokens`, with the keys
the checkpoint uses (docs/numerics.md section 10). It predicts the token after next from the main model's
last hidden state and the next token: `h' = eh_proj([enorm(embed(t_next)) ; hnorm(h)])`, the block,
then `shared_head`. Generation does not use it (speculative decoding is not implemented); it is loaded
when the checkpoint has it, so nothing is silently dropped, and skipped on request.

Shape legend: B batch, S tokens, D hidden size, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_config import ModelConfig
from dsv3_mla import LatentCache


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, *, self_attn: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = self_attn
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = mlp

    def forward(
        self,
        hidden_BSD: torch.Tensor,
        position_ids_BS: torch.Tensor,
        cache: LatentCache | None,
        seq_lengths_B: torch.Tensor | None,
    ) -> torch.Tensor:
        attended_BSD = self.self_attn(
            self.input_layernorm(hidden_BSD), position_ids_BS, cache, seq_lengths_B=seq_lengths_B
        )
        hidden_BSD = hidden_BSD + attended_BSD
        return hidden_BSD + self.mlp(self.post_attention_layernorm(hidden_BSD))


class SharedHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, hidden_BSD: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(hidden_BSD))


class MultiTokenPredictionLayer(DecoderLayer):
    def __init__(self, cfg: ModelConfig, *, self_attn: nn.Module, mlp: nn.Module) -> None:
        super().__init__(cfg, self_attn=self_attn, mlp=mlp)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.shared_head = SharedHead(cfg)

    def predict(
        self,
        hidden_BSD: torch.Tensor,
        next_ids_BS: torch.Tensor,
        position_ids_BS: torch.Tensor,
        cache: LatentCache | None = None,
        seq_lengths_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] for the token after `next_ids_BS`, from the main model's final hidden states."""
        fused_BSD = self.eh_proj(
            torch.cat([self.enorm(self.embed_tokens(next_ids_BS)), self.hnorm(hidden_BSD)], dim=-1)
        )
        return self.shared_head(super().forward(fused_BSD, position_ids_BS, cache, seq_lengths_B))

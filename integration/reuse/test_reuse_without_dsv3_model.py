"""Other models built from dsv3-mla and dsv3-moe alone (dsv3-model is not installed here).

1. MLA attention over dense SwiGLU MLPs: a DeepSeek-V3 with every layer dense. Reference: transformers'
   DeepseekV3ForCausalLM with `first_k_dense_replace = num_hidden_layers`, weights copied key for key.
2. A DeepSeekMoE block under plain multi-head attention (torch's `nn.MultiheadAttention`). Reference: the
   same network with transformers' `DeepseekV3MoE` in place of ours, weights copied.

Tolerance fp32 1e-5 (same weights, same op order up to matmul blocking).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_config import ModelConfig, preset
from dsv3_mla import LatentCache, MultiHeadLatentAttention
from dsv3_moe import DeepseekMoE, GroupedExperts, GroupLimitedRouter, SwiGLUMLP, load_hf_moe_state_dict

TOL = 1e-5


class MlaDenseBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MultiHeadLatentAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLUMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, positions, cache):
        x = x + self.self_attn(self.input_layernorm(x), positions, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class MlaDenseLM(nn.Module):
    """Names as transformers' so its state dict loads unchanged."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(MlaDenseBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, ids, positions, caches):
        x = self.model.embed_tokens(ids)
        for layer, cache in zip(self.model.layers, caches, strict=True):
            x = layer(x, positions, cache)
        return self.lm_head(self.model.norm(x))


def test_mla_over_dense_mlp_matches_transformers_all_dense_v3():
    from dsv3_testing.hf_reference import hf_causal_lm

    cfg = preset("tiny").replace(first_k_dense_replace=3, num_nextn_predict_layers=0)
    hf = hf_causal_lm(cfg, seed=5)
    ours = MlaDenseLM(cfg).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, cfg.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    caches = LatentCache.empty_layers(cfg, cfg.num_hidden_layers, 1, 13, dtype=torch.float32)
    with torch.inference_mode():
        expected = hf(ids).logits
        prefill = ours(ids[:, :11], torch.arange(11)[None], caches)
        step = ours(ids[:, 11:], torch.tensor([[11]]), caches)
    got = torch.cat([prefill, step], dim=1)
    assert (got - expected).abs().max().item() <= TOL


class AttentionThenMoE(nn.Module):
    def __init__(self, hidden: int, heads: int, moe: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden)
        self.moe = moe

    def forward(self, x):
        seq = x.shape[1]
        causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.moe(self.norm2(x))


def test_deepseek_moe_under_plain_attention_matches_transformers_moe():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    from dsv3_testing.hf_reference import hf_config

    cfg = preset("tiny")
    torch.manual_seed(0)
    hf_moe = DeepseekV3MoE(hf_config(cfg)).eval()
    with torch.no_grad():
        for name, tensor in [*hf_moe.named_parameters(), *hf_moe.named_buffers()]:
            tensor.normal_(0.0, 0.1 if "bias" in name else 0.05)
    ours_moe = DeepseekMoE(
        router=GroupLimitedRouter(cfg),
        experts=GroupedExperts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size),
        shared_experts=SwiGLUMLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts),
    )
    load_hf_moe_state_dict(ours_moe, hf_moe.state_dict(), cfg)
    ours = AttentionThenMoE(cfg.hidden_size, 4, ours_moe).eval()
    reference = AttentionThenMoE(cfg.hidden_size, 4, hf_moe).eval()
    reference.attn.load_state_dict(ours.attn.state_dict())
    reference.norm1.load_state_dict(ours.norm1.state_dict())
    reference.norm2.load_state_dict(ours.norm2.state_dict())
    x = torch.randn(2, 10, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert (ours(x) - reference(x)).abs().max().item() <= TOL


@pytest.mark.parametrize("missing", ["dsv3_model", "dsv3_weights"])
def test_only_the_layer_packages_are_present(missing):
    assert importlib.util.find_spec(missing) is None

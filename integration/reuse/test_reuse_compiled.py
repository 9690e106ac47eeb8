"""A model of its own built from dsv3-mla's public steps and dsv3-moe's parts, with a cache it owns (a
plain [B, T, C] buffer per layer, not `LatentCache`), decoded under `torch.compile(fullgraph=True)`:
no graph break, no recompile over 16 steps, logits within 1e-5 of the same model run eagerly (fp32,
same weights; inductor fuses elementwise ops, measured ~1e-7). Its eager steps are first tied to
`MultiHeadLatentAttention.forward` over a `LatentCache` (dsv3-mla's own composition) at 1e-5.
"""

from __future__ import annotations

import torch
import torch._dynamo
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_config import ModelConfig, preset
from dsv3_mla import LatentCache, MultiHeadLatentAttention, choose_path
from dsv3_moe import DeepseekMoE, GroupedExperts, GroupLimitedRouter, SwiGLUMLP

TOL = 1e-5
STEPS = 16
BATCH, PROMPT = 2, 6


class OwnCacheBlock(nn.Module):
    """MLA (project -> own cache write and mask -> attend -> output) then a DeepSeekMoE block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = MultiHeadLatentAttention(cfg)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.moe = DeepseekMoE(
            router=GroupLimitedRouter(cfg),
            experts=GroupedExperts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size),
            shared_experts=SwiGLUMLP(cfg.hidden_size, cfg.moe_intermediate_size),
        )

    def forward(self, x_BSD: torch.Tensor, positions_BS: torch.Tensor, buffer_BTC: torch.Tensor) -> torch.Tensor:
        """Rows are unpadded and contiguous from 0: slot t is visible iff t <= the query's position."""
        q_nope, q_pe, kv_BSC = self.attn.project(self.norm1(x_BSD), positions_BS)
        rows_B1 = torch.arange(x_BSD.shape[0], device=x_BSD.device)[:, None]
        buffer_BTC[rows_B1, positions_BS] = kv_BSC
        slots_T = torch.arange(buffer_BTC.shape[1], device=x_BSD.device)
        visible_BST = slots_T <= positions_BS[..., None]
        path = choose_path(self.attn.cfg, x_BSD.shape[1], buffer_BTC.shape[1])
        x_BSD = x_BSD + self.attn.output(self.attn.attend(q_nope, q_pe, buffer_BTC, visible_BST, path))
        return x_BSD + self.moe(self.norm2(x_BSD))


class OwnCacheLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(OwnCacheBlock(cfg) for _ in range(2))
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, ids_BS: torch.Tensor, positions_BS: torch.Tensor, buffers: list[torch.Tensor]) -> torch.Tensor:
        x_BSD = self.embed(ids_BS)
        for block, buffer_BTC in zip(self.blocks, buffers, strict=True):
            x_BSD = block(x_BSD, positions_BS, buffer_BTC)
        return self.head(x_BSD)


def build() -> tuple[ModelConfig, OwnCacheLM]:
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = OwnCacheLM(cfg).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.moe.gate.e_score_correction_bias.normal_(0.0, 0.1)  # bias-driven selection exercised
    return cfg, model


def decode(cfg: ModelConfig, step, prefill) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Prefill PROMPT tokens eagerly, then STEPS greedy steps through `step`; logits [STEPS, B, V]."""
    buffers = [torch.zeros(BATCH, PROMPT + STEPS, cfg.latent_cache_width) for _ in range(2)]
    ids_BS = torch.randint(0, cfg.vocab_size, (BATCH, PROMPT), generator=torch.Generator().manual_seed(1))
    logits_BV = prefill(ids_BS, torch.arange(PROMPT).expand(BATCH, -1), buffers)[:, -1]
    out = []
    for position in range(PROMPT, PROMPT + STEPS):
        positions_B1 = torch.full((BATCH, 1), position)
        logits_BV = step(logits_BV.argmax(dim=-1)[:, None], positions_B1, buffers)[:, 0]
        out.append(logits_BV)
    return torch.stack(out)


@torch.inference_mode()
def test_own_cache_steps_match_mla_forward_over_latent_cache() -> None:
    cfg, model = build()
    block = model.blocks[0]
    x_BSD = torch.randn(BATCH, PROMPT + 1, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    positions_BS = torch.arange(PROMPT + 1).expand(BATCH, -1)
    buffer_BTC = torch.zeros(BATCH, PROMPT + 4, cfg.latent_cache_width)
    cache = LatentCache.empty(cfg, BATCH, PROMPT + 4, dtype=torch.float32)
    attended = block.attn(block.norm1(x_BSD), positions_BS, cache)
    want = x_BSD + attended
    want = want + block.moe(block.norm2(want))
    torch.testing.assert_close(block(x_BSD, positions_BS, buffer_BTC), want, rtol=0, atol=TOL)


@torch.inference_mode()
def test_own_model_decode_compiles_once_and_matches_eager() -> None:
    cfg, model = build()
    want = decode(cfg, model, model)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = decode(cfg, compiled, model)
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1
    assert float(want.abs().max()) > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)

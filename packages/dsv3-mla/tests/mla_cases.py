"""Shared cases for the MLA suites: configs, and running our module through prefill + decode.

(A plain helper module next to the tests; file names stay unique across packages.)
"""

from __future__ import annotations

import torch

from dsv3_config import ModelConfig, preset
from dsv3_mla import LatentCache, MultiHeadLatentAttention, PathChoice

TINY = preset("tiny")
_V3_YARN = preset("deepseek-v3").rope_scaling
assert _V3_YARN is not None
CONFIGS: dict[str, ModelConfig] = {
    "tiny": TINY,  # q_lora 48, YaRN factor 4, v_head_dim 12 != qk_nope_head_dim 16
    "q_lora_null": TINY.replace(q_lora_rank=None),
    "v_wider_than_nope": TINY.replace(v_head_dim=20),
    "yarn_factor_40": TINY.replace(rope_scaling=_V3_YARN.to_hf(), max_position_embeddings=163840),
    "plain_rope": TINY.replace(rope_scaling=None),
    "attention_bias": TINY.replace(attention_bias=True),
}
PROMPT_LENGTHS = (17, 11)
DECODE_STEPS = 8


def random_inputs(
    cfg: ModelConfig, *, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompts [B, 17, D] (padding filled with large noise) and decode inputs [B, 8, D]."""
    gen = torch.Generator().manual_seed(seed)
    batch, seq = len(PROMPT_LENGTHS), max(PROMPT_LENGTHS)
    prompts = torch.randn(batch, seq, cfg.hidden_size, generator=gen)
    for row, length in enumerate(PROMPT_LENGTHS):
        prompts[row, length:] = 100 * torch.randn(seq - length, cfg.hidden_size, generator=gen)
    decode = torch.randn(batch, DECODE_STEPS, cfg.hidden_size, generator=gen)
    return prompts.to(dtype), decode.to(dtype)


@torch.no_grad()
def run_ours(
    mla: MultiHeadLatentAttention, prompts_BSD: torch.Tensor, decode_BKD: torch.Tensor, path: PathChoice
) -> tuple[torch.Tensor, torch.Tensor, LatentCache]:
    """Padded prefill, then one decode step per column of `decode_BKD`; returns (prefill, decode) outputs."""
    batch, seq, _ = prompts_BSD.shape
    lengths = torch.tensor(PROMPT_LENGTHS)
    cache = LatentCache.empty(mla.cfg, batch, seq + decode_BKD.shape[1], dtype=prompts_BSD.dtype)
    positions = torch.arange(seq).expand(batch, seq)
    prefill = mla(prompts_BSD, positions, cache, seq_lengths_B=lengths, path=path)
    steps = []
    for step in range(decode_BKD.shape[1]):
        steps.append(mla(decode_BKD[:, step : step + 1], cache.lengths_B[:, None].clone(), cache, path=path))
    return prefill, torch.cat(steps, dim=1), cache

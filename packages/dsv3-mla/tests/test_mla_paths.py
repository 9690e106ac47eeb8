"""The per-call choice between the absorbed and expanded forms, and their agreement beyond the HF
cases: chunked prefill through the cache, attention without a cache, bad inputs."""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS, PROMPT_LENGTHS, random_inputs

from dsv3_config import preset
from dsv3_mla import LatentCache, MultiHeadLatentAttention, choose_path
from dsv3_testing.hf_attention import HfAttentionRunner, hf_attention


def test_choose_path_rule_pinned() -> None:
    v3 = preset("deepseek-v3")  # c 512, n 128, r 64, v 128
    # decode at T=4096: absorbed 512*256 + 4096*1088 < expanded 4096*512*256 + 4096*320
    assert choose_path(v3, 1, 4096) == "absorbed"
    assert choose_path(v3, 4096, 4096) == "expanded"  # fresh prefill: n + v = 256 < 2c = 1024
    # crossover for a chunk over a long cache: S*(c(n+v) + T(2c+r)) vs T*c(n+v) + S*T*(n+r+v)
    # at T = 65536: absorbed iff S < 65536*131072 / (131072 + 65536*768) = 170.3
    assert choose_path(v3, 170, 65536) == "absorbed"
    assert choose_path(v3, 171, 65536) == "expanded"
    tiny = preset("tiny")  # c 32, n 16, r 8, v 12: T = 1 gives expanded 32*28 + 36 < absorbed 32*28 + 72
    assert choose_path(tiny, 1, 1) == "expanded"
    assert choose_path(tiny, 1, 2) == "absorbed"


@pytest.mark.parametrize("path", ["absorbed", "expanded"])
def test_chunked_prefill_matches_transformers(path: str) -> None:
    cfg = CONFIGS["tiny"]
    hf = hf_attention(cfg, seed=11)
    mla = MultiHeadLatentAttention(cfg)
    mla.load_state_dict(hf.state_dict(), strict=True)
    prompts, _ = random_inputs(cfg, seed=12)
    length = PROMPT_LENGTHS[0]
    want = HfAttentionRunner(hf).prefill(prompts[:1, :length])
    cache = LatentCache.empty(cfg, 1, 32, dtype=torch.float32)
    with torch.no_grad():
        first = mla(prompts[:1, :10], torch.arange(10)[None], cache, path=path)  # type: ignore[arg-type]
        second = mla(prompts[:1, 10:length], torch.arange(10, length)[None], cache, path=path)  # type: ignore[arg-type]
    torch.testing.assert_close(torch.cat([first, second], dim=1), want, rtol=0, atol=1e-5)


def test_without_cache_equals_with_cache() -> None:
    cfg = CONFIGS["q_lora_null"]
    torch.manual_seed(13)
    mla = MultiHeadLatentAttention(cfg).eval()
    prompts, _ = random_inputs(cfg, seed=14)
    lengths = torch.tensor(PROMPT_LENGTHS)
    positions = torch.arange(prompts.shape[1]).expand(2, -1)
    with torch.no_grad():
        no_cache = mla(prompts, positions, seq_lengths_B=lengths)
        cached = mla(prompts, positions, LatentCache.empty(cfg, 2, 20, dtype=torch.float32), seq_lengths_B=lengths)
    for row, length in enumerate(PROMPT_LENGTHS):
        torch.testing.assert_close(no_cache[row, :length], cached[row, :length], rtol=0, atol=1e-6)


def test_bad_inputs_raise() -> None:
    cfg = CONFIGS["tiny"]
    mla = MultiHeadLatentAttention(cfg)
    hidden = torch.randn(1, 2, cfg.hidden_size)
    with pytest.raises(ValueError, match="path"):
        mla(hidden, torch.arange(2)[None], path="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="position_ids_BS"):
        mla(hidden, torch.arange(3)[None])
    with pytest.raises(ValueError, match=r"position_ids_BS span 0\.\.1"):  # checked where positions enter
        LatentCache.empty(cfg, 1, 1, dtype=torch.float32).check_positions(torch.arange(2)[None])

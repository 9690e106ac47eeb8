"""The latent cache: 576 values per token per layer for V3, stored once; the normalized latent and the
rotated k_pe (checked against what transformers caches); in-place writes at per-row positions; and
padding that never reaches real tokens."""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS, PROMPT_LENGTHS, random_inputs, run_ours

from dsv3_config import preset
from dsv3_mla import LatentCache, MultiHeadLatentAttention
from dsv3_rope import deinterleave_index
from dsv3_testing.hf_attention import HfAttentionRunner, hf_attention
from dsv3_testing.hf_reference import transformers_major


def test_v3_cache_is_576_wide_once() -> None:
    cfg = preset("deepseek-v3")
    layers = LatentCache.empty_layers(cfg, 3, batch_size=2, max_len=8, dtype=torch.bfloat16)
    assert layers[0].buffer_BTC.shape == (2, 8, 512 + 64)
    assert layers[0].bytes_per_token() == 576 * 2  # bf16, one copy (the contrib port stores 1152 values)
    # one allocation, per-layer views
    assert layers[1].buffer_BTC.data_ptr() - layers[0].buffer_BTC.data_ptr() == 2 * 8 * 576 * 2


def test_write_in_place_at_per_row_positions() -> None:
    cache = LatentCache.empty(CONFIGS["tiny"], 2, 6, dtype=torch.float32)
    buffer = cache.buffer_BTC
    entries = torch.arange(2 * 3 * 40, dtype=torch.float32).view(2, 3, 40) + 1
    cache.write(torch.tensor([[0, 1, 2], [3, 4, 5]]), entries, seq_lengths_B=torch.tensor([3, 2]))
    assert cache.buffer_BTC is buffer
    torch.testing.assert_close(buffer[0, :3], entries[0], rtol=0, atol=0)
    torch.testing.assert_close(buffer[1, 3:5], entries[1, :2], rtol=0, atol=0)
    assert buffer[1, 5].abs().sum() == 0  # the padding token left its slot untouched
    assert cache.lengths_B.tolist() == [3, 5]
    with pytest.raises(ValueError, match=r"position_ids_BS span 0\.\.6"):
        cache.check_positions(torch.tensor([[6], [0]]))
    cache.check_positions(torch.tensor([[5], [0]]))  # the last slot is a slot


def test_visibility_spans_the_whole_buffer() -> None:
    """Hand-computed: row 0 holds 3 slots, row 1 holds 5; a query sees t <= position and t < length."""
    cache = LatentCache.empty(CONFIGS["tiny"], 2, 6, dtype=torch.float32)
    cache.lengths_B.copy_(torch.tensor([3, 5]))
    visible = cache.visibility(torch.tensor([[1, 2], [4, 9]]))
    assert visible.shape == (2, 2, 6)
    assert visible.int().tolist() == [
        [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]],
        [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]],
    ]


def test_cache_holds_normalized_latent_and_rotated_k_pe_as_transformers() -> None:
    cfg = CONFIGS["tiny"]
    hf = hf_attention(cfg, seed=7)
    mla = MultiHeadLatentAttention(cfg)
    mla.load_state_dict(hf.state_dict(), strict=True)
    prompts, decode = random_inputs(cfg, seed=8)
    _, _, cache = run_ours(mla.eval(), prompts, decode, "absorbed")
    length, n, c = PROMPT_LENGTHS[0], cfg.qk_nope_head_dim, cfg.kv_lora_rank
    runner = HfAttentionRunner(hf)
    runner.prefill(prompts[:1, :length])
    for step in range(decode.shape[1]):
        runner.decode(decode[:1, step : step + 1])
    layer = runner.cache.layers[0]
    ours = cache.buffer_BTC[0, : length + decode.shape[1]]
    perm = deinterleave_index(cfg.qk_rope_head_dim)
    if transformers_major() < 5:  # 4.x caches expanded keys [1, H, T, n + r] (head 0 suffices: k_pe is shared)
        k_nope_TX = mla.kv_b_proj(ours[:, :c]).unflatten(-1, (cfg.num_attention_heads, -1))[:, :, :n]
        torch.testing.assert_close(k_nope_TX.transpose(0, 1), layer.keys[0, :, :, :n], rtol=0, atol=1e-5)
        torch.testing.assert_close(ours[:, c:][:, perm], layer.keys[0, 0, :, n:], rtol=0, atol=1e-5)
    else:  # 5.x caches the normalized latent as keys and the rotated k_pe as values, [1, 1, T, .]
        torch.testing.assert_close(ours[:, :c], layer.keys[0, 0], rtol=0, atol=1e-5)
        torch.testing.assert_close(ours[:, c:][:, perm], layer.values[0, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", ["absorbed", "expanded"])
def test_padding_never_reaches_real_tokens(path: str) -> None:
    cfg = CONFIGS["tiny"]
    torch.manual_seed(9)
    mla = MultiHeadLatentAttention(cfg).eval()
    prompts, decode = random_inputs(cfg, seed=10)
    base = run_ours(mla, prompts, decode, path)  # type: ignore[arg-type]
    noisy = prompts.clone()
    noisy[1, PROMPT_LENGTHS[1] :] = -1e4 * torch.rand_like(noisy[1, PROMPT_LENGTHS[1] :])
    other = run_ours(mla, noisy, decode, path)  # type: ignore[arg-type]
    # Real tokens see exactly the same numbers: bitwise equal.
    assert torch.equal(base[0][1, : PROMPT_LENGTHS[1]], other[0][1, : PROMPT_LENGTHS[1]])
    assert torch.equal(base[1], other[1])
    assert base[2].lengths_B.tolist() == [p + decode.shape[1] for p in PROMPT_LENGTHS]

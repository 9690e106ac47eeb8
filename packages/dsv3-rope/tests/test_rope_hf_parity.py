"""cos/sin and rotated q/k against transformers' `DeepseekV3RotaryEmbedding` and
`apply_rotary_pos_emb_interleave`, at positions up to 32K, for YaRN factor 40, YaRN factor 1 and plain RoPE.

transformers lays cos/sin out half-split (`cat(freqs, freqs)`) and permutes q/k to `[evens | odds]`
before rotating; ours stay interleaved. So HF's tensors equal ours indexed by `deinterleave_index(D)`.
"""

from __future__ import annotations

import pytest
import torch

from dsv3_config import ModelConfig, preset
from dsv3_rope import RotaryEmbedding, apply_rotary, deinterleave_index
from dsv3_testing.hf_reference import hf_config

V3 = preset("deepseek-v3")
CONFIGS = {
    "yarn-factor-40": V3,
    "yarn-factor-1": V3.replace(rope_scaling={**V3.rope_scaling.to_hf(), "factor": 1.0}),  # type: ignore[union-attr]
    "plain": V3.replace(rope_scaling=None),
    "yarn-no-mscale-all-dim": V3.replace(rope_scaling={**V3.rope_scaling.to_hf(), "mscale_all_dim": 0.0}),  # type: ignore[union-attr]
}
POSITIONS = torch.tensor([[0, 1, 2, 3, 4095, 4096, 8191, 16384], [7, 100, 1000, 10000, 20000, 30000, 32767, 32768]])


def hf_rotary(cfg: ModelConfig) -> torch.nn.Module:
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    return DeepseekV3RotaryEmbedding(hf_config(cfg))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cos_sin_match_transformers(name: str) -> None:
    cfg = CONFIGS[name]
    cos_hf, sin_hf = hf_rotary(cfg)(torch.zeros(1, dtype=torch.float32), POSITIONS)
    cos, sin = RotaryEmbedding(cfg)(POSITIONS)
    perm = deinterleave_index(cfg.qk_rope_head_dim)
    # The same fp32 inverse frequencies, the same single-rounded product position * inv_freq and the
    # same torch cos/sin kernels: bit-identical (measured under transformers 4.57.6 and 5.24.0).
    torch.testing.assert_close(cos[..., perm], cos_hf, rtol=0, atol=0)
    torch.testing.assert_close(sin[..., perm], sin_hf, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["yarn-factor-40", "yarn-factor-1", "plain"])
def test_rotated_q_k_match_transformers_up_to_the_permutation(name: str) -> None:
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import apply_rotary_pos_emb_interleave

    cfg = CONFIGS[name]
    torch.manual_seed(0)
    batch, heads, seq, dim = POSITIONS.shape[0], 3, POSITIONS.shape[1], cfg.qk_rope_head_dim
    q_BHSD = torch.randn(batch, heads, seq, dim)
    k_B1SD = torch.randn(batch, 1, seq, dim)
    cos_hf, sin_hf = hf_rotary(cfg)(q_BHSD, POSITIONS)
    q_hf, k_hf = apply_rotary_pos_emb_interleave(q_BHSD, k_B1SD, cos_hf, sin_hf)

    cos, sin = RotaryEmbedding(cfg)(POSITIONS)
    q_ours = apply_rotary(q_BHSD.transpose(1, 2), cos, sin).transpose(1, 2)
    k_ours = apply_rotary(k_B1SD.transpose(1, 2), cos, sin).transpose(1, 2)
    perm = deinterleave_index(dim)
    # Same products in the same order; 1e-5 covers a different fused multiply-add order on |x| < 5.
    torch.testing.assert_close(q_ours[..., perm], q_hf, rtol=0, atol=1e-5)
    torch.testing.assert_close(k_ours[..., perm], k_hf, rtol=0, atol=1e-5)
    # Without the permutation they differ (the layouts really are different) ...
    assert (q_ours - q_hf).abs().max() > 0.1
    # ... but attention scores agree: q.k is invariant under permuting both.
    torch.testing.assert_close(q_ours @ k_ours.transpose(-1, -2), q_hf @ k_hf.transpose(-1, -2), rtol=0, atol=1e-4)

"""Inverse frequencies and the cos/sin factor pinned to closed forms (docs/numerics.md section 2)."""

from __future__ import annotations

import math

import pytest
import torch

from dsv3_config import YarnScaling, preset
from dsv3_rope import (
    RotaryEmbedding,
    plain_inv_freq,
    rope_inv_freq,
    yarn_attention_factor,
    yarn_correction_range,
    yarn_inv_freq,
    yarn_linear_ramp,
)


def _published_v3_yarn() -> YarnScaling:
    """DeepSeek-V3's YaRN block as its shipped config.json has it (the hand-derived values below are for it)."""
    scaling = preset("deepseek-v3").rope_scaling
    assert isinstance(scaling, YarnScaling)
    return scaling


V3_YARN = _published_v3_yarn()


def test_the_published_block_has_the_numbers_the_derivations_use() -> None:
    got = (V3_YARN.factor, V3_YARN.original_max_position_embeddings, V3_YARN.beta_fast, V3_YARN.beta_slow)
    assert (*got, V3_YARN.mscale, V3_YARN.mscale_all_dim) == (40, 4096, 32, 1, 1.0, 1.0)


def test_v3_correction_range_is_10_to_23() -> None:
    # d(32) = 10.47 -> floor 10; d(1) = 22.51 -> ceil 23 (docs/numerics.md section 2, derived).
    assert yarn_correction_range(V3_YARN, 64, 10000.0) == (10, 23)


def test_correction_range_reads_original_max_position_embeddings() -> None:
    shorter = V3_YARN.model_copy(update={"original_max_position_embeddings": 256})
    # d(r) = 64 ln(256 / (2 pi r)) / (2 ln 10^4): d(32) = 0.12 -> 0, d(1) = 12.86 -> 13.
    assert yarn_correction_range(shorter, 64, 10000.0) == (0, 13)


def test_v3_yarn_inv_freq_keeps_low_dims_and_divides_high_dims_by_factor() -> None:
    inv_freq = yarn_inv_freq(V3_YARN, 64, 10000.0).double()
    closed = torch.tensor([10000.0 ** (-2 * i / 64) for i in range(32)], dtype=torch.float64)
    # fp32 power vs float64 closed form: relative 1e-6 covers fp32 rounding of base^(x).
    torch.testing.assert_close(inv_freq[:11], closed[:11], rtol=1e-6, atol=0)
    torch.testing.assert_close(inv_freq[23:], closed[23:] / 40, rtol=1e-6, atol=0)
    ramp = torch.tensor([(i - 10) / 13 for i in range(11, 23)], dtype=torch.float64)
    blend = closed[11:23] * (1 - ramp) + closed[11:23] / 40 * ramp
    torch.testing.assert_close(inv_freq[11:23], blend, rtol=1e-6, atol=0)


def test_linear_ramp_guards_equal_bounds() -> None:
    assert yarn_linear_ramp(3, 3, 6).tolist() == pytest.approx([0, 0, 0, 0, 1, 1])


def test_plain_rope_when_rope_scaling_is_null() -> None:
    cfg = preset("moonlight")
    assert cfg.rope_scaling is None
    closed = torch.tensor([50000.0 ** (-2 * i / 64) for i in range(32)], dtype=torch.float64)
    torch.testing.assert_close(rope_inv_freq(cfg).double(), closed, rtol=1e-6, atol=0)
    assert RotaryEmbedding(cfg).attention_factor == 1.0


def test_yarn_factor_one_equals_plain_rope() -> None:
    factor_one = V3_YARN.model_copy(update={"factor": 1.0})
    # The blend a*(1-r) + a*r rounds once more than plain: 1 fp32 ulp (2^-23 relative).
    torch.testing.assert_close(yarn_inv_freq(factor_one, 64, 10000.0), plain_inv_freq(64, 10000.0), rtol=2**-23, atol=0)
    assert yarn_attention_factor(factor_one) == 1.0


def test_attention_factor_cases() -> None:
    assert yarn_attention_factor(None) == 1.0
    assert yarn_attention_factor(V3_YARN) == 1.0  # mscale == mscale_all_dim
    no_all_dim = V3_YARN.model_copy(update={"mscale_all_dim": 0.0})
    assert yarn_attention_factor(no_all_dim) == pytest.approx(0.1 * math.log(40) + 1)  # 1.3689
    ratio = V3_YARN.model_copy(update={"mscale": 1.0, "mscale_all_dim": 0.707})
    assert yarn_attention_factor(ratio) == pytest.approx((0.1 * math.log(40) + 1) / (0.0707 * math.log(40) + 1))


def test_yarn_policy_other_than_always_is_refused() -> None:
    with pytest.raises(ValueError, match="yarn_policy"):
        RotaryEmbedding(preset("tiny").replace(yarn_policy="extended_context_only"))


def test_inv_freq_survives_dtype_casts_and_meta_construction():
    """`.to(bfloat16)` must not round the frequencies, and `to_empty` after a meta build must not
    leave them uninitialized: both recompute the exact fp32 values from the config."""
    from dsv3_config import preset
    from dsv3_rope import RotaryEmbedding, rope_inv_freq

    cfg = preset("tiny")
    expected = rope_inv_freq(cfg)
    cast = RotaryEmbedding(cfg).to(torch.bfloat16)
    assert cast.inv_freq_F.dtype == torch.float32
    assert torch.equal(cast.inv_freq_F, expected)
    with torch.device("meta"):
        lazy = RotaryEmbedding(cfg)
    materialized = lazy.to_empty(device="cpu")
    assert torch.equal(materialized.inv_freq_F, expected)

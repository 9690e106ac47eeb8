"""Rotary inverse frequencies and the cos/sin magnitude, as pure functions of a `ModelConfig`.

One source for each formula (plain RoPE, YaRN's correction range, ramp and blend, and the cos/sin
`attention_factor`), written to reproduce transformers 4.57's `_compute_yarn_parameters` bit for bit:
the same fp32 operations in the same order. What this module does *not* apply: the softmax mscale^2
(that is `ModelConfig.softmax_scale`, from the same `dsv3_config.yarn_get_mscale`).

Shape legend: D = qk_rope_head_dim (rotary width), F = D // 2 (number of frequencies).
"""

from __future__ import annotations

import math

import torch

from dsv3_config import ModelConfig, YarnScaling, yarn_get_mscale


def plain_inv_freq(dim: int, base: float) -> torch.Tensor:
    """`base^(-2i/dim)` for `i = 0..dim/2-1`, fp32 [F], computed as transformers does."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def yarn_correction_dim(num_rotations: float, dim: int, base: float, original_max_position_embeddings: int) -> float:
    """The (fractional) frequency index that completes `num_rotations` turns over the original context."""
    return (dim * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_correction_range(scaling: YarnScaling, dim: int, base: float) -> tuple[int, int]:
    """`(low, high)`: floor of d(beta_fast), ceil of d(beta_slow), clamped to `[0, dim - 1]`.

    `original_max_position_embeddings` comes from the config (required there): V3 gives (10, 23).
    """
    low = math.floor(yarn_correction_dim(scaling.beta_fast, dim, base, scaling.original_max_position_embeddings))
    high = math.ceil(yarn_correction_dim(scaling.beta_slow, dim, base, scaling.original_max_position_embeddings))
    return max(low, 0), min(high, dim - 1)


def yarn_linear_ramp(low: float, high: float, num: int) -> torch.Tensor:
    """`clamp((i - low) / (high - low), 0, 1)` for `i < num`, fp32 [F]; `high += 0.001` when equal."""
    if low == high:
        high += 0.001
    return torch.clamp((torch.arange(num, dtype=torch.float32) - low) / (high - low), 0, 1)


def yarn_inv_freq(scaling: YarnScaling, dim: int, base: float) -> torch.Tensor:
    """YaRN inverse frequencies, fp32 [F]: the original frequency below `low`, divided by `factor` above
    `high`, a linear blend in between."""
    pos_freqs_F = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation_F = 1.0 / pos_freqs_F
    interpolation_F = 1.0 / (scaling.factor * pos_freqs_F)
    low, high = yarn_correction_range(scaling, dim, base)
    keep_F = 1 - yarn_linear_ramp(low, high, dim // 2)
    return interpolation_F * (1 - keep_F) + extrapolation_F * keep_F


def yarn_attention_factor(scaling: YarnScaling | None) -> float:
    """The magnitude transformers multiplies cos and sin by.

    `get_mscale(f, mscale) / get_mscale(f, mscale_all_dim)` when both keys are truthy, else
    `get_mscale(f)`; 1.0 without YaRN. V3 (mscale == mscale_all_dim == 1) gives exactly 1.0.
    """
    if scaling is None:
        return 1.0
    if scaling.mscale and scaling.mscale_all_dim:
        return yarn_get_mscale(scaling.factor, scaling.mscale) / yarn_get_mscale(scaling.factor, scaling.mscale_all_dim)
    return yarn_get_mscale(scaling.factor)


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """The model's inverse frequencies, fp32 [F]: YaRN when `cfg.rope_scaling` is set, plain RoPE otherwise."""
    if cfg.rope_scaling is None:
        return plain_inv_freq(cfg.qk_rope_head_dim, cfg.rope_theta)
    return yarn_inv_freq(cfg.rope_scaling, cfg.qk_rope_head_dim, cfg.rope_theta)

"""dsv3-rope: YaRN rotary embeddings for DeepSeek-V3-family models, per-row positions, interleaved layout."""

from dsv3_rope.frequencies import (
    plain_inv_freq,
    rope_inv_freq,
    yarn_attention_factor,
    yarn_correction_dim,
    yarn_correction_range,
    yarn_inv_freq,
    yarn_linear_ramp,
)
from dsv3_rope.rotary import RotaryEmbedding, apply_rotary, deinterleave_index, rotary_cos_sin, rotate_pairs

__all__ = [
    "RotaryEmbedding",
    "apply_rotary",
    "deinterleave_index",
    "plain_inv_freq",
    "rope_inv_freq",
    "rotary_cos_sin",
    "rotate_pairs",
    "yarn_attention_factor",
    "yarn_correction_dim",
    "yarn_correction_range",
    "yarn_inv_freq",
    "yarn_linear_ramp",
]

"""dsv3-mla: Multi-head Latent Attention with a compressed latent cache, two exact attention forms and a
tensor-parallel shard plan. `LinearFactory`, `default_linear_factory` and `RMSNorm` are dsv3-blocks', named
here because MLA's constructor takes the one and builds the other."""

from dsv3_blocks import LinearFactory, RMSNorm, default_linear_factory
from dsv3_mla.attention import LATENT_NORM_EPS, MATRIX_READ_PROJECTIONS, MultiHeadLatentAttention, PathChoice
from dsv3_mla.attention_blocked import KEY_BLOCK, KeyVisibility, online_softmax
from dsv3_mla.attention_math import (
    AttentionPath,
    absorbed_attention,
    choose_path,
    expanded_attention,
    masked_softmax,
    visibility_mask,
)
from dsv3_mla.cache import LatentCache
from dsv3_mla.shard_plan import mla_shard_plan

__all__ = [
    "KEY_BLOCK",
    "LATENT_NORM_EPS",
    "MATRIX_READ_PROJECTIONS",
    "AttentionPath",
    "KeyVisibility",
    "LatentCache",
    "LinearFactory",
    "MultiHeadLatentAttention",
    "PathChoice",
    "RMSNorm",
    "absorbed_attention",
    "choose_path",
    "default_linear_factory",
    "expanded_attention",
    "masked_softmax",
    "mla_shard_plan",
    "online_softmax",
    "visibility_mask",
]

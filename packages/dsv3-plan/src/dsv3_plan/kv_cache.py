"""Latent KV cache bytes per rank.

MLA caches one `latent_cache_width` entry per token per layer (`[k_pe | compressed_kv]`, 576 values for
V3), shared by all heads. Under tensor parallelism every rank computes its heads' attention over the
whole latent, so every rank holds the whole cache: it is replicated, not sharded, and does not shrink
with TP. The contrib port writes the entry into both the K and the V slot of NxDI's cache manager
(docs/reference-port.md defect 2), storing `cache_copies = 2` of it; its decode graph reads only the K slot.
"""

from __future__ import annotations

from dsv3_config import ModelConfig

CACHE_BYTES_PER_VALUE = 2  # BF16


def cache_bytes_per_token(cfg: ModelConfig, copies: int) -> int:
    """Bytes one cached token costs a rank across all layers (V3: 61 x 576 x 2 B = 68.6 KiB a copy)."""
    return cfg.num_hidden_layers * cfg.latent_cache_width * CACHE_BYTES_PER_VALUE * copies


def latent_cache_bytes(cfg: ModelConfig, batch: int, seq_len: int, copies: int) -> int:
    """The cache each rank allocates for `batch` sequences of `seq_len` positions."""
    return batch * seq_len * cache_bytes_per_token(cfg, copies)

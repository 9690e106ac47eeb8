"""The MLA latent stored once in NxDI's KV cache: 576 values per token per layer for V3, not 1152.

NxDI's `KVCacheManager` allocates a K and a V buffer per layer of the same width `head_dim`
(`modules/kvcache/kv_cache_manager.py:151-164`, `:194-236`); the contrib port writes the 576-wide
latent into both. Here the two slots hold the two halves of dsv3-mla's cache entry instead:
K = the normalized latent `c_kv` (`kv_lora_rank` wide), V = the rotated shared rope key `k_pe`
(`qk_rope_head_dim` wide). Reads slice dim 2 and writes use the update tensor's own shape
(`kv_cache_manager.py:331-332`, `modules/kvcache/utils.py:70-84`), so distinct widths pass through
NxDI unchanged. With `num_key_value_heads = 1` each rank holds the whole latent (MLA shares it across
heads).

Shape legend: B cache rows, T max_length, c kv_lora_rank, r qk_rope_head_dim.
"""

from __future__ import annotations

from typing import Any

from neuronx_distributed_inference.modules.kvcache.kv_cache_manager import KVCacheManager

from dsv3_config import ModelConfig


class LatentKVCacheManager(KVCacheManager):
    """K buffers `[B, 1, T, c]`, V buffers `[B, 1, T, r]`."""

    def __init__(self, config: Any, model_config: ModelConfig, **kwargs: Any) -> None:
        self._latent_widths = (model_config.kv_lora_rank, model_config.qk_rope_head_dim)
        neuron_config = config.neuron_config
        unsupported = {
            name: getattr(neuron_config, name)
            for name in ("k_cache_transposed", "kv_cache_tiling", "flash_decoding_enabled", "is_block_kv_layout")
            if getattr(neuron_config, name)
        }
        if unsupported or neuron_config.kv_cache_quant:
            raise ValueError(
                f"LatentKVCacheManager: unsupported cache layout options {unsupported or 'kv_cache_quant'}"
            )
        super().__init__(config, **kwargs)

    def _init_kv_shape(self, config: Any, layer_to_cache_size_mapping: list[int] | None = None) -> None:
        if layer_to_cache_size_mapping:
            raise ValueError("LatentKVCacheManager: per-layer cache sizes are not supported")
        super()._init_kv_shape(config, layer_to_cache_size_mapping)
        latent_width, rope_width = self._latent_widths
        k_shape: tuple[int, ...] = tuple(self.k_shape)  # type: ignore[has-type]  # set by NxDI, untyped
        v_shape: tuple[int, ...] = tuple(self.v_shape)  # type: ignore[has-type]
        self.k_shape = (*k_shape[:-1], latent_width)
        self.v_shape = (*v_shape[:-1], rope_width)

    def values_per_token_per_layer(self) -> int:
        """Cache values one token costs in one layer, read off the allocated buffers."""
        k_BHTc, v_BHTr = self.past_key_values[0], self.past_key_values[1]
        return k_BHTc.shape[1] * k_BHTc.shape[3] + v_BHTr.shape[1] * v_BHTr.shape[3]

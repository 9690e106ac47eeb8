"""The MLA latent stored once in NxDI's KV cache: 576 values per token per layer for V3, not 1152.

NxDI's `KVCacheManager` allocates a K and a V buffer per layer of the same width `head_dim`
(`modules/kvcache/kv_cache_manager.py:151-164`, `:194-236`); the contrib port writes the 576-wide
latent into both. Here the two slots hold the two halves of dsv3-mla's cache entry instead:
K = the normalized latent `c_kv` (`kv_lora_rank` wide), V = the rotated shared rope key `k_pe`
(`qk_rope_head_dim` wide). Reads slice dim 2 and writes use the update tensor's own shape
(`kv_cache_manager.py:331-332`, `modules/kvcache/utils.py:70-84`), so distinct widths pass through
NxDI unchanged. With `num_key_value_heads = 1` each rank holds the whole latent (MLA shares it across
heads).

The block layout (`is_block_kv_layout`, vLLM's paged cache): `LatentBlockKVCacheManager` keeps the same
two halves in NxDI's block form, `[N + 1, b, 1, c]` and `[N + 1, b, 1, r]` (N = `pa_num_blocks`, b =
`pa_block_size`, the extra block the destination of padded writes), read through `active_block_table` and
written at `slot_mapping` by NxDI's own `BlockKVCacheManager` code (`modules/kvcache/block_kv_cache_manager.py`).
docs/nxdi-contract.md section 6 describes both layouts.

Shape legend: B cache rows, T max_length, c kv_lora_rank, r qk_rope_head_dim, N blocks, b block size.
"""

from __future__ import annotations

from typing import Any

from neuronx_distributed_inference.modules.kvcache.block_kv_cache_manager import BlockKVCacheManager
from neuronx_distributed_inference.modules.kvcache.kv_cache_manager import KVCacheManager

from dsv3_config import ModelConfig

# NeuronConfig switches that change each layout's shapes or read it with kernels the latent halves do not fit.
_CONTIGUOUS_UNSUPPORTED = (
    "k_cache_transposed",
    "kv_cache_tiling",
    "flash_decoding_enabled",
    "is_block_kv_layout",
    "kv_cache_quant",
)
_BLOCK_LAYOUT_UNSUPPORTED = ("attn_block_tkg_nki_kernel_enabled", "attn_tkg_nki_kernel_enabled", "kv_cache_quant")


def _refuse_layout_options(manager: str, neuron_config: Any, names: tuple[str, ...]) -> None:
    enabled = [name for name in names if getattr(neuron_config, name)]
    if enabled:
        raise ValueError(f"{manager}: unsupported cache layout options {enabled}")


class LatentKVCacheManager(KVCacheManager):
    """K buffers `[B, 1, T, c]`, V buffers `[B, 1, T, r]`."""

    def __init__(self, config: Any, model_config: ModelConfig, **kwargs: Any) -> None:
        self._latent_widths = (model_config.kv_lora_rank, model_config.qk_rope_head_dim)
        _refuse_layout_options("LatentKVCacheManager", config.neuron_config, _CONTIGUOUS_UNSUPPORTED)
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


class LatentBlockKVCacheManager(BlockKVCacheManager):
    """K blocks `[N + 1, b, 1, c]`, V blocks `[N + 1, b, 1, r]`: the latent once, in vLLM's paged layout.

    NxDI's manager gathers blocks with `active_block_table` into `[B, 1, blocks * b, width]` and scatters
    this call's entries at `slot_mapping` (-1: the reserved last block), both from the tensors' own shapes,
    so the two widths pass through. Two of its choices are replaced: its K/V shapes (one `head_dim` for
    both), and the block tiling it applies under prefix caching (a 5-D view that saves a V transpose in
    its NKI kernels, which the dsv3 layers do not call). Chunked prefill uses the same layout and reads:
    `Dsv3NeuronConfig` serves it through the prefix-caching flow (docs/nxdi-contract.md section 6)."""

    def __init__(self, config: Any, model_config: ModelConfig, **kwargs: Any) -> None:
        self._latent_widths = (model_config.kv_lora_rank, model_config.qk_rope_head_dim)
        if not config.neuron_config.is_prefix_caching:
            raise ValueError("LatentBlockKVCacheManager: the block cache is read and written under is_prefix_caching")
        _refuse_layout_options("LatentBlockKVCacheManager", config.neuron_config, _BLOCK_LAYOUT_UNSUPPORTED)
        super().__init__(config, **kwargs)

    def _init_kv_shape(self, config: Any, layer_to_cache_size_mapping: list[int] | None = None) -> None:
        if layer_to_cache_size_mapping:
            raise ValueError("LatentBlockKVCacheManager: per-layer cache sizes are not supported")
        neuron_config = config.neuron_config
        blocks = neuron_config.pa_num_blocks + self._NUM_EXTRA_RESERVED_BLOCK
        heads = self._get_num_kv_heads_per_rank(config)
        latent_width, rope_width = self._latent_widths
        self.k_shape = (blocks, neuron_config.pa_block_size, heads, latent_width)
        self.v_shape = (blocks, neuron_config.pa_block_size, heads, rope_width)
        self.block_tiling = False

    def values_per_token_per_layer(self) -> int:
        """Cache values one token slot costs in one layer, read off the allocated buffers."""
        k_NbHc, v_NbHr = self.past_key_values[0], self.past_key_values[1]
        return k_NbHc.shape[2] * k_NbHc.shape[3] + v_NbHr.shape[2] * v_NbHr.shape[3]

"""The latent is stored once: NxDI buffers hold `kv_lora_rank + qk_rope_head_dim` values per token per
layer (576 for V3), counted from the allocated tensors, against the contrib port's 1152 (the same
576-wide latent allocated in both the K and the V slot of NxDI's stock manager)."""

from __future__ import annotations

import harness
import torch

from dsv3_config import preset


def _values_per_token_per_layer(kv_mgr: torch.nn.Module, num_layers: int, max_length: int) -> int:
    """Sum of all cache buffer elements / (layers * slots), batch 1: independent of how the manager labels them."""
    total = sum(buffer.numel() for buffer in kv_mgr.past_key_values)
    return total // (num_layers * max_length)


def _v3_config(seq_len: int):  # type: ignore[no-untyped-def]
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    neuron_config = Dsv3NeuronConfig(
        tp_degree=1, batch_size=1, seq_len=seq_len, max_context_length=seq_len, torch_dtype=torch.bfloat16, on_cpu=True
    )
    return Dsv3InferenceConfig.from_model_config(preset("deepseek-v3"), neuron_config)


def test_v3_latent_cache_holds_576_values_per_token_per_layer() -> None:
    from dsv3_model.neuron import LatentKVCacheManager

    config = _v3_config(seq_len=32)
    kv_mgr = LatentKVCacheManager(config, config.model_config(), num_kv_head=config.num_key_value_heads)
    assert len(kv_mgr.past_key_values) == 2 * 61
    assert _values_per_token_per_layer(kv_mgr, 61, 32) == 576
    assert kv_mgr.values_per_token_per_layer() == 576
    assert all(buffer.dtype == torch.bfloat16 for buffer in kv_mgr.past_key_values)


def test_stock_manager_with_the_contrib_layout_holds_1152() -> None:
    """The baseline the test above beats: NxDI's manager with head_dim = 576 allocates K and V alike."""
    from neuronx_distributed_inference.modules.kvcache.kv_cache_manager import KVCacheManager

    config = _v3_config(seq_len=32)
    kv_mgr = KVCacheManager(config, num_kv_head=config.num_key_value_heads)
    assert _values_per_token_per_layer(kv_mgr, 61, 32) == 1152


def test_running_model_allocates_the_latent_width(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = harness.model_config("tiny")
    harness.save_hf_checkpoint(cfg, tmp_path)
    model = harness.build_neuron_model(tmp_path, tp_degree=1, seq_len=32)
    for wrapper in (model.context_encoding_model, model.token_generation_model):
        kv_mgr = wrapper.model.kv_mgr
        assert _values_per_token_per_layer(kv_mgr, cfg.num_hidden_layers, 32) == cfg.latent_cache_width == 40


def test_v3_block_layout_holds_576_values_per_token_slot_per_layer() -> None:
    """vLLM's paged layout with prefix caching on: blocks of 16 slots, plus NxDI's reserved padding block."""
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig, LatentBlockKVCacheManager

    neuron_config = Dsv3NeuronConfig(
        tp_degree=1,
        batch_size=4,
        seq_len=256,
        max_context_length=256,
        torch_dtype=torch.bfloat16,
        on_cpu=True,
        is_block_kv_layout=True,
        is_prefix_caching=True,
        pa_block_size=16,
        pa_num_blocks=64,
    )
    config = Dsv3InferenceConfig.from_model_config(preset("deepseek-v3"), neuron_config)
    kv_mgr = LatentBlockKVCacheManager(config, config.model_config(), num_kv_head=config.num_key_value_heads)
    assert len(kv_mgr.past_key_values) == 2 * 61
    assert _values_per_token_per_layer(kv_mgr, 61, (64 + 1) * 16) == 576
    assert kv_mgr.values_per_token_per_layer() == 576
    assert [tuple(buffer.shape) for buffer in kv_mgr.past_key_values[:2]] == [(65, 16, 1, 512), (65, 16, 1, 64)]

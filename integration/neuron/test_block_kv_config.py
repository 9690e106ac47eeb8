"""`Dsv3InferenceConfig` with the block KV layout: what vLLM's Neuron plugin sets with prefix caching on
is accepted and survives NxDI's save/load, chunked prefill is accepted in both spellings and runs through
the prefix-caching flow, and the combinations the model cannot run are refused naming the options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import harness
import pytest
import torch

# vllm-neuron `worker/neuronx_distributed_model_loader.py:775-780` (a5ef7c8), prefix caching on.
PLUGIN_BLOCK_OPTIONS = {"is_block_kv_layout": True, "is_prefix_caching": True, "pa_block_size": 16, "pa_num_blocks": 64}


def _config(**options: Any):  # type: ignore[no-untyped-def]
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    settings: dict[str, Any] = {"tp_degree": 1, "batch_size": 1, "seq_len": 64, "max_context_length": 64}
    neuron_config = Dsv3NeuronConfig(**{**settings, **options}, torch_dtype=torch.float32, on_cpu=True)
    return Dsv3InferenceConfig.from_model_config(harness.model_config("tiny"), neuron_config)


def test_plugin_block_options_survive_save_and_load(tmp_path: Path) -> None:
    from dsv3_model.neuron import Dsv3InferenceConfig

    config = _config(**PLUGIN_BLOCK_OPTIONS)
    config.save(str(tmp_path))
    reloaded = Dsv3InferenceConfig.load(str(tmp_path)).neuron_config
    assert (reloaded.is_block_kv_layout, reloaded.is_prefix_caching, reloaded.is_chunked_prefill) == (True, True, False)
    assert (reloaded.pa_block_size, reloaded.pa_num_blocks, reloaded.dsv3_chunked_prefill) == (16, 64, False)


@pytest.mark.parametrize("spelling", [{"chunked_prefill_config": {"max_num_seqs": 1}}, {"is_chunked_prefill": True}])
def test_chunked_prefill_runs_through_the_prefix_caching_flow(spelling: dict[str, Any], tmp_path: Path) -> None:
    """NxDI's application class raises for its own `is_chunked_prefill` (`models/model_base.py:3054`): the flag
    stays off for NxDI, prefix caching carries the chunks, and the choice survives a reload."""
    from dsv3_model.neuron import Dsv3InferenceConfig

    config = _config(is_block_kv_layout=True, pa_block_size=16, pa_num_blocks=8, **spelling)
    neuron_config = config.neuron_config
    assert (neuron_config.is_chunked_prefill, neuron_config.is_prefix_caching, neuron_config.dsv3_chunked_prefill) == (
        False,
        True,
        True,
    )
    config.save(str(tmp_path))
    assert Dsv3InferenceConfig.load(str(tmp_path)).neuron_config.dsv3_chunked_prefill is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"is_block_kv_layout": True}, "is_block_kv_layout=True with is_prefix_caching=False"),
        ({"is_prefix_caching": True}, "is_block_kv_layout=False with is_prefix_caching=True"),
        ({"chunked_prefill_config": {}}, "chunked prefill needs is_block_kv_layout=True"),
    ],
)
def test_block_options_the_model_cannot_run_are_refused(options: dict[str, Any], message: str) -> None:
    from dsv3_config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config(**options)

"""vLLM's Neuron plugin finds the dsv3 model in its own processes: the `vllm.general_plugins` entry point
is installed (found through `importlib.metadata`, as vLLM's `load_plugins_by_group` finds it), calling it
twice leaves NxDI's model tables holding `NeuronDsv3ForCausalLM` under the key the plugin's loader
computes from each published `architectures` value, and Kimi-K2's published `config.json` (which names
remote code) loads through NxDI's own `load_pretrained_config`.

The plugin cannot be imported here (it needs vLLM; PyPI's `vllm-neuron` is a placeholder), so its key
derivation is copied below with the lines it comes from.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest
import torch

from dsv3_config import ModelConfig, load_config
from dsv3_config.presets import PUBLISHED_FILES, published_config

PLUGIN_GROUP = "vllm.general_plugins"
PLUGIN_NAME = "dsv3"


def neuron_loader_key(architecture: str) -> tuple[str, str]:
    """vllm-project/vllm-neuron a5ef7c8, `vllm_neuron/worker/neuronx_distributed_model_loader.py:634-655`
    (`_camel_to_kebab`, `_get_neuron_model_cls`): `MODEL_TYPES[model][task]` is what the plugin looks up."""
    model, task = architecture.split("For", 1)
    if task == "ConditionalGeneration":
        task = "CausalLM"
    s1 = re.sub("(.)([A-Z][a-z]+)", r"\1-\2", task)
    return model.lower(), re.sub("([a-z0-9])([A-Z])", r"\1-\2", s1).lower()


def _model_fields(cfg: ModelConfig) -> dict[str, object]:
    """Every field but the two NxDI's loader does not pass on: `torch_dtype` (moved into
    `neuron_config.torch_dtype`, NxDI `utils/hf_adapter.py:58-67`) and `hf_extra` (bookkeeping keys such as
    `auto_map`, which the model does not read)."""
    return cfg.model_dump(exclude={"torch_dtype", "hf_extra"})


def _entry_point() -> importlib.metadata.EntryPoint:
    found = [ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP) if ep.name == PLUGIN_NAME]
    assert len(found) == 1, f"{PLUGIN_GROUP} entry points: {importlib.metadata.entry_points(group=PLUGIN_GROUP)}"
    return found[0]


def test_entry_point_registers_every_published_architecture_twice_safely() -> None:
    from neuronx_distributed_inference.utils import constants

    from dsv3_model.neuron import MODEL_TYPE_NAMES, NeuronDsv3ForCausalLM

    plugin = _entry_point()
    assert plugin.value == "dsv3_model.neuron.registry:vllm_plugin"
    function = plugin.load()
    others = {name: dict(tasks) for name, tasks in constants.MODEL_TYPES.items()}
    function()
    function()
    architectures = {published_config(file)["architectures"][0] for file in PUBLISHED_FILES.values()}
    assert architectures == {"DeepseekV3ForCausalLM", "DeepseekV2ForCausalLM"}
    for architecture in architectures:
        model, task = neuron_loader_key(architecture)
        assert constants.MODEL_TYPES[model][task] is NeuronDsv3ForCausalLM, architecture
    for model_type in ("deepseek_v3", "deepseek_v2", "kimi_k2"):
        assert constants.MODEL_TYPES[model_type]["causal-lm"] is NeuronDsv3ForCausalLM
    # NxDI's own entries are untouched.
    for name, tasks in others.items():
        if name not in MODEL_TYPE_NAMES:
            assert constants.MODEL_TYPES[name] == tasks, name


def test_register_reaches_inference_demo_table() -> None:
    import importlib

    from dsv3_model.neuron import NeuronDsv3ForCausalLM, register

    demo = importlib.import_module("neuronx_distributed_inference.inference_demo")
    register()
    assert demo.MODEL_TYPES["deepseek_v3"]["causal-lm"] is NeuronDsv3ForCausalLM


def test_kimi_k2_published_config_loads_through_nxdi_loader(tmp_path: Path) -> None:
    """`load_pretrained_config` calls `AutoConfig.from_pretrained(path)` without remote code (NxDI
    `utils/hf_adapter.py:49`); after the plugin ran, Kimi-K2's file (with its `auto_map`) reads into the
    same model configuration `dsv3_config` reads from the file itself."""
    from neuronx_distributed_inference.utils.hf_adapter import load_pretrained_config

    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    hf = published_config(PUBLISHED_FILES["kimi-k2"])
    assert hf["model_type"] == "kimi_k2"
    assert "AutoConfig" in hf["auto_map"]
    (tmp_path / "config.json").write_text(json.dumps(hf))
    _entry_point().load()()
    neuron_config = Dsv3NeuronConfig(
        tp_degree=1, batch_size=1, seq_len=64, max_context_length=64, torch_dtype=torch.float32, on_cpu=True
    )
    config = Dsv3InferenceConfig(neuron_config, load_config=load_pretrained_config(str(tmp_path)))
    assert _model_fields(config.model_config()) == _model_fields(load_config(hf))
    assert (config.model_type, config.num_local_experts, config.head_dim) == ("kimi_k2", 384, 576)


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-v2-lite", "moonlight"])
def test_other_published_configs_load_through_nxdi_loader(name: str, tmp_path: Path) -> None:
    from neuronx_distributed_inference.utils.hf_adapter import load_pretrained_config

    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    hf = published_config(PUBLISHED_FILES[name])
    (tmp_path / "config.json").write_text(json.dumps(hf))
    neuron_config = Dsv3NeuronConfig(
        tp_degree=1, batch_size=1, seq_len=64, max_context_length=64, torch_dtype=torch.float32, on_cpu=True
    )
    config = Dsv3InferenceConfig(neuron_config, load_config=load_pretrained_config(str(tmp_path)))
    assert _model_fields(config.model_config()) == _model_fields(load_config(hf))


def test_entry_point_is_silent_without_nxdi() -> None:
    """vLLM calls general plugins on every platform: where NxDI is not installed the call does nothing."""
    import os
    import subprocess
    import sys

    script = (
        "import importlib.metadata, sys; "
        "ep, = [e for e in importlib.metadata.entry_points(group='vllm.general_plugins') if e.name == 'dsv3']; "
        "assert ep.load()() is None; "
        "assert not [m for m in sys.modules if m.startswith(('neuronx_distributed', 'transformers'))], sys.modules"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    assert result.stderr == ""

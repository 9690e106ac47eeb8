"""Without NxDI installed (this venv), the adapter's names say where NxDI comes from; the checkpoint code,
which needs no NxD, still imports."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.mark.skipif(importlib.util.find_spec("neuronx_distributed") is not None, reason="NxD is installed here")
def test_model_class_names_the_extra_and_the_repository():
    import dsv3_model.neuron as neuron

    with pytest.raises(ModuleNotFoundError) as err:
        _ = neuron.NeuronDsv3ForCausalLM
    assert "dsv3-model[neuron]" in str(err.value)
    assert "https://pip.repos.neuron.amazonaws.com" in str(err.value)


def test_checkpoint_code_imports_without_nxd():
    from dsv3_model.neuron import expected_keys, nxdi_shard_plan, write_per_rank_files

    assert callable(expected_keys)
    assert callable(nxdi_shard_plan)
    assert callable(write_per_rank_files)

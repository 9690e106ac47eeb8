"""The inventory's attention declaration against the modules: our `MultiHeadLatentAttention` and
transformers' `DeepseekV3Attention`, both built on the meta device, hold exactly the declared tensors
(names and shapes), and `mla_shard_plan` places every one of them."""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS

from dsv3_config.inventory import attention_tensors
from dsv3_mla import MultiHeadLatentAttention, mla_shard_plan


def _state_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameters and persistent buffers (the rotary frequencies are computed, not stored)."""
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_module_parameters_are_the_inventory(name: str) -> None:
    cfg = CONFIGS[name]
    with torch.device("meta"):
        ours = MultiHeadLatentAttention(cfg)
    declared = {decl.name: decl.shape for decl in attention_tensors(cfg)}
    assert {n: tuple(p.shape) for n, p in ours.named_parameters()} == declared
    assert _state_shapes(ours) == declared


@pytest.mark.parametrize("name", ["tiny", "q_lora_null", "attention_bias"])
def test_transformers_attention_holds_the_inventory(name: str) -> None:
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    from dsv3_testing.hf_reference import hf_config

    cfg = CONFIGS[name]
    with torch.device("meta"):
        hf = DeepseekV3Attention(hf_config(cfg), layer_idx=0)
    assert _state_shapes(hf) == {decl.name: decl.shape for decl in attention_tensors(cfg)}


@pytest.mark.parametrize("name", ["tiny", "q_lora_null", "attention_bias"])
def test_shard_plan_places_every_parameter(name: str) -> None:
    cfg = CONFIGS[name]
    with torch.device("meta"):
        ours = MultiHeadLatentAttention(cfg)
    assert set(mla_shard_plan(cfg)) == set(ours.state_dict())

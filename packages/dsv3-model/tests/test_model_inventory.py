"""The inventory (`dsv3_config.inventory.model_tensors`) against our causal LM built on the meta device
from each published config (full widths, depth cut to the dense layers plus one MoE layer, the MTP layer
kept): the same tensor names and shapes, routed experts stacked, and `count_params` equal to the model's
own count with and without MTP. transformers' side (no MTP) is `test_model_published_configs`."""

from __future__ import annotations

import pytest
import torch

from dsv3_config import ModelConfig, count_params, load_config
from dsv3_config.inventory import model_tensors
from dsv3_config.presets import PUBLISHED_FILES, published_config
from dsv3_model.causal_lm import DeepseekForCausalLM

NAMES = sorted(set(PUBLISHED_FILES.values()))


def cut(name: str) -> ModelConfig:
    cfg = load_config(published_config(name))
    return cfg.replace(num_hidden_layers=cfg.first_k_dense_replace + 1)


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tensor once (a tied lm_head is the embedding under a second name)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[key] = tensor
    return out


def meta_model(cfg: ModelConfig, include_mtp: bool) -> DeepseekForCausalLM:
    """With `include_mtp`, the MTP layers the config has (V3 and R1: one; the others none)."""
    with torch.device("meta"):
        return DeepseekForCausalLM(cfg, include_mtp=include_mtp and cfg.num_nextn_predict_layers > 0)


@pytest.mark.parametrize("name", NAMES)
def test_built_model_holds_the_inventory(name: str) -> None:
    cfg = cut(name)
    state = unique_state(meta_model(cfg, include_mtp=True))
    declared = model_tensors(cfg, include_mtp=True, stacked=True)
    assert {key: tuple(t.shape) for key, t in state.items()} == {key: d.shape for key, d in declared.items()}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_built_model_with_and_without_mtp(name: str) -> None:
    cfg = cut(name)
    counts = count_params(cfg)
    assert counts.total == sum(t.numel() for t in unique_state(meta_model(cfg, include_mtp=False)).values())
    assert counts.total_with_mtp == sum(t.numel() for t in unique_state(meta_model(cfg, include_mtp=True)).values())


@pytest.mark.parametrize("changes", [{"tie_word_embeddings": True}, {"attention_bias": True, "q_lora_rank": None}])
def test_variants_hold_the_inventory(changes: dict[str, object]) -> None:
    cfg = cut("deepseek-v3.config.json").replace(**changes)
    state = unique_state(meta_model(cfg, include_mtp=True))
    declared = model_tensors(cfg, include_mtp=True, stacked=True)
    assert {key: tuple(t.shape) for key, t in state.items()} == {key: d.shape for key, d in declared.items()}
    assert count_params(cfg).total_with_mtp == sum(t.numel() for t in state.values())

"""The inventory's MLP and MoE declarations against the modules, all built on the meta device: our
`DeepseekMoE` and `SwiGLUMLP` hold exactly the declared (stacked) tensors, transformers' MoE block
exactly the declared per-expert checkpoint tensors, and the shard plans place every one of ours."""

from __future__ import annotations

import pytest
import torch
from moe_cases import CONFIGS

from dsv3_config import LayerKind
from dsv3_config.inventory import mlp_tensors, unstacked
from dsv3_moe import SwiGLUMLP, build_deepseek_moe, mlp_shard_plan, moe_shard_plan

NAMES = sorted(CONFIGS)


def _state_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
def test_moe_module_is_the_inventory(name: str) -> None:
    cfg = CONFIGS[name]
    with torch.device("meta"):
        ours = build_deepseek_moe(cfg)
    declared = mlp_tensors(cfg, LayerKind.MOE)
    # the correction bias is a buffer (as in transformers); everything else a parameter
    parameters = {d.name: d.shape for d in declared if not d.name.endswith("e_score_correction_bias")}
    assert {n: tuple(p.shape) for n, p in ours.named_parameters()} == parameters
    assert _state_shapes(ours) == {d.name: d.shape for d in declared}
    assert set(moe_shard_plan(cfg)) == set(ours.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_transformers_moe_block_holds_the_per_expert_tensors(name: str) -> None:
    """transformers 4.x holds one tensor per expert, as checkpoints store them; 5.x stacks them in memory
    with our names."""
    from dsv3_testing.hf_moe import hf_moe_block
    from dsv3_testing.hf_reference import transformers_major

    cfg = CONFIGS[name]
    with torch.device("meta"):
        hf = hf_moe_block(cfg, seed=0)
    declared = list(mlp_tensors(cfg, LayerKind.MOE))
    expected = declared if transformers_major() >= 5 else unstacked(declared)
    assert _state_shapes(hf) == {d.name: d.shape for d in expected}


def test_dense_mlp_is_the_inventory() -> None:
    cfg = CONFIGS["tiny"]
    with torch.device("meta"):
        ours = SwiGLUMLP(cfg.hidden_size, cfg.intermediate_size)
    declared = {d.name: d.shape for d in mlp_tensors(cfg, LayerKind.DENSE)}
    assert {n: tuple(p.shape) for n, p in ours.named_parameters()} == declared
    assert set(mlp_shard_plan()) == set(declared)

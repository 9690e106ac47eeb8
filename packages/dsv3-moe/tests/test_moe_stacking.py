"""The stacking recipe (the inventory's `ExpertStack`s, applied by `load_hf_moe_state_dict`): HF's
per-expert tensors -> `experts.gate_up_proj` [E, 2I, H] and `experts.down_proj` [E, H, I], checked element
by element on a state dict whose values encode their origin, and the loader's strictness. That the recipe
names transformers' own per-expert tensors is `test_moe_inventory`'s check."""

from __future__ import annotations

import pytest
import torch
from moe_cases import CONFIGS, build_moe

from dsv3_moe import load_hf_moe_state_dict

CFG = CONFIGS["tiny"]
E, H, INTER = CFG.n_routed_experts, CFG.hidden_size, CFG.moe_intermediate_size


def per_expert_state() -> dict[str, torch.Tensor]:
    """HF checkpoint layout; expert e's gate is filled with 1000e + 1, up 1000e + 2, down 1000e + 3."""
    state = {name: torch.randn(value.shape) for name, value in build_moe(CFG).state_dict().items()}
    del state["experts.gate_up_proj"], state["experts.down_proj"]
    for e in range(E):
        state[f"experts.{e}.gate_proj.weight"] = torch.full((INTER, H), 1000.0 * e + 1)
        state[f"experts.{e}.up_proj.weight"] = torch.full((INTER, H), 1000.0 * e + 2)
        state[f"experts.{e}.down_proj.weight"] = torch.full((H, INTER), 1000.0 * e + 3)
    return state


def test_load_stacks_gate_then_up_per_expert() -> None:
    state = per_expert_state()
    moe = build_moe(CFG)
    load_hf_moe_state_dict(moe, state, CFG)
    gate_up, down = moe.experts.gate_up_proj, moe.experts.down_proj
    assert gate_up.shape == (E, 2 * INTER, H)
    assert down.shape == (E, H, INTER)
    for e in (0, 5, E - 1):
        assert bool((gate_up[e, :INTER] == 1000 * e + 1).all())
        assert bool((gate_up[e, INTER:] == 1000 * e + 2).all())
        assert bool((down[e] == 1000 * e + 3).all())
    assert torch.equal(moe.gate.weight, state["gate.weight"])
    assert torch.equal(moe.shared_experts.down_proj.weight, state["shared_experts.down_proj.weight"])


def test_load_is_strict() -> None:
    state = per_expert_state()
    del state[f"experts.{E - 1}.up_proj.weight"]
    with pytest.raises(KeyError, match=f"experts.{E - 1}.up_proj.weight"):
        load_hf_moe_state_dict(build_moe(CFG), state, CFG)
    state = per_expert_state()
    state["experts.16.gate_proj.weight"] = torch.zeros(INTER, H)  # an expert the config does not have
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_hf_moe_state_dict(build_moe(CFG), state, CFG)

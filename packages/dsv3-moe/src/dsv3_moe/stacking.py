"""How HF's per-expert checkpoint tensors become our stacked expert parameters, applied with torch.

The recipe is data in the inventory (`dsv3_config.inventory.expert_stacks`, `ExpertStack`): which
per-expert tensors make a stack and along which dim gate and up are concatenated. `expert_slice` builds
one expert's slice of a stack (what a streaming loader copies into `stack[e]`, so memory is the stack plus
one source tensor); `load_hf_moe_state_dict` stacks a whole in-memory HF MoE state dict, for tests and
small models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from dsv3_config import ModelConfig
from dsv3_config.inventory import ExpertStack, expert_stacks


def expert_slice(stack: ExpertStack, get: Callable[[str], torch.Tensor], expert: int) -> torch.Tensor:
    """`stacked[expert]`: expert `expert`'s source tensors concatenated along `stack.concat_dim`."""
    return torch.cat([get(key) for key in stack.source_keys(expert)], dim=stack.concat_dim)


def load_hf_moe_state_dict(module: nn.Module, hf_state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> None:
    """Load an HF MoE block's state dict (keys relative to `mlp.`) into `module` strictly.

    Per-expert keys are stacked as the inventory declares; keys already stacked (transformers 5.x keeps
    `experts.gate_up_proj` in memory) pass through. Missing or unused keys raise (`load_state_dict` strict).
    """
    state = dict(hf_state_dict)
    for decl in expert_stacks(cfg):
        stack = decl.stacked_from
        if decl.name in state or stack is None:
            continue
        keys = stack.all_source_keys()
        missing = [key for key in keys if key not in state]
        if missing:
            raise KeyError(f"{decl.name}: the state dict lacks {len(missing)} source tensors, e.g. {missing[0]}")
        state[decl.name] = torch.stack([expert_slice(stack, state.__getitem__, e) for e in range(stack.num_experts)])
        for key in keys:
            del state[key]
    module.load_state_dict(state, strict=True)

"""How HF's per-expert checkpoint tensors become our stacked expert parameters — declared as data.

`expert_stacking_rules(cfg)` returns one `ExpertStackingRule` per stacked parameter. Names are relative
to the MoE module (`model.layers.{i}.mlp.`), so a loader prefixes both target and sources:

    ExpertStackingRule(target="experts.gate_up_proj",
                       sources=("experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight"),
                       num_experts=E, stack_dim=0, concat_dim=0)
    ExpertStackingRule(target="experts.down_proj",
                       sources=("experts.{e}.down_proj.weight",),
                       num_experts=E, stack_dim=0, concat_dim=0)

Meaning: `target = stack([cat([src.format(e=e) for src in sources], dim=concat_dim) for e in range(E)],
dim=stack_dim)`. `concat_dim` indexes the *per-expert* tensors (gate [I, H] and up [I, H] give [2I, H]);
in the stacked result it is dim `concat_dim + 1`. `stack_dim` is always 0. Under expert/tensor
parallelism the loader slices the result (or each expert, before stacking) as `moe_shard_plan` says.

`load_hf_moe_state_dict` applies the rules with `torch.stack`/`torch.cat` for tests and small models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from dsv3_config import ModelConfig


@dataclass(frozen=True)
class ExpertStackingRule:
    target: str
    sources: tuple[str, ...]
    num_experts: int
    stack_dim: int
    concat_dim: int

    def source_keys(self) -> list[str]:
        return [template.format(e=e) for e in range(self.num_experts) for template in self.sources]

    def stack(self, get: Mapping[str, torch.Tensor]) -> torch.Tensor:
        per_expert = [
            torch.cat([get[template.format(e=e)] for template in self.sources], dim=self.concat_dim)
            for e in range(self.num_experts)
        ]
        return torch.stack(per_expert, dim=self.stack_dim)


def expert_stacking_rules(cfg: ModelConfig) -> tuple[ExpertStackingRule, ...]:
    num_experts = cfg.n_routed_experts
    return (
        ExpertStackingRule(
            target="experts.gate_up_proj",
            sources=("experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight"),
            num_experts=num_experts,
            stack_dim=0,
            concat_dim=0,
        ),
        ExpertStackingRule(
            target="experts.down_proj",
            sources=("experts.{e}.down_proj.weight",),
            num_experts=num_experts,
            stack_dim=0,
            concat_dim=0,
        ),
    )


def load_hf_moe_state_dict(module: nn.Module, hf_state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> None:
    """Load an HF MoE block's state dict (keys relative to `mlp.`) into `module` strictly.

    Per-expert keys are stacked by `expert_stacking_rules`; keys already stacked (transformers 5.x keeps
    `experts.gate_up_proj` in memory) pass through. Missing or unused keys raise (`load_state_dict` strict).
    """
    state = dict(hf_state_dict)
    for rule in expert_stacking_rules(cfg):
        if rule.target in state:
            continue
        keys = rule.source_keys()
        missing = [key for key in keys if key not in state]
        if missing:
            raise KeyError(f"{rule.target}: the state dict lacks {len(missing)} source tensors, e.g. {missing[0]}")
        state[rule.target] = rule.stack(state)
        for key in keys:
            del state[key]
    module.load_state_dict(state, strict=True)

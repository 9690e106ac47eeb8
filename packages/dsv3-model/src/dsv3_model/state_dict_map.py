"""Where each tensor of `DeepseekForCausalLM` comes from in a Hugging Face checkpoint — as data.

Every parameter and buffer has the HF key of the same name, except the stacked routed experts, whose
recipe dsv3-moe declares (`expert_stacking_rules`): which per-expert HF tensors to stack, and how
gate and up are fused. `fill_model` applies the recipes to any tensor source (an in-memory HF state
dict in tests, the streaming checkpoint reader when loading), one expert at a time, so peak memory
is the model plus one source tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from dsv3_config import ModelConfig

if TYPE_CHECKING:
    from dsv3_moe import ExpertStackingRule

TensorSource = Callable[[str], torch.Tensor]


@dataclass(frozen=True)
class StackedSource:
    """`stack([cat([t.format(e=e) for t in templates], dim=concat_dim) for e in experts])`."""

    templates: tuple[str, ...]
    num_experts: int
    concat_dim: int

    def keys(self) -> list[str]:
        return [t.format(e=e) for e in range(self.num_experts) for t in self.templates]

    def expert(self, get: TensorSource, e: int) -> torch.Tensor:
        return torch.cat([get(t.format(e=e)) for t in self.templates], dim=self.concat_dim)


Source = str | StackedSource


def checkpoint_sources(
    cfg: ModelConfig, target_keys: Iterable[str], available: set[str], extra_rules: Iterable[ExpertStackingRule] = ()
) -> dict[str, Source]:
    """The HF source of each target key of our model's state dict.

    A stacked key already present in the source (transformers 5 keeps experts fused in memory) is
    taken as is; otherwise it is stacked from the per-expert tensors that checkpoints hold, by dsv3-moe's
    rules and `extra_rules` (e.g. the FP8 scales of experts kept resident, `dsv3_model.fp8_resident`).
    """
    from dsv3_moe import expert_stacking_rules

    rules = {rule.target: rule for rule in (*expert_stacking_rules(cfg), *extra_rules)}
    sources: dict[str, Source] = {}
    for key in target_keys:
        prefix, _, local = key.partition(".mlp.")
        rule = rules.get(local) if local else None
        if rule is None or key in available:
            sources[key] = key
        else:
            templates = tuple(f"{prefix}.mlp.{t}" for t in rule.sources)
            sources[key] = StackedSource(templates, cfg.n_routed_experts, rule.concat_dim)
    return sources


def _without_tied_aliases(targets: dict[str, torch.Tensor], available: set[str]) -> dict[str, torch.Tensor]:
    """One key per tensor: tied weights (`lm_head.weight` is `model.embed_tokens.weight` under
    `tie_word_embeddings`) appear under both names, and transformers saves only one of them."""
    names_by_tensor: dict[int, list[str]] = {}
    for key, tensor in targets.items():
        names_by_tensor.setdefault(id(tensor), []).append(key)
    keep = {next((k for k in names if k in available), names[0]) for names in names_by_tensor.values()}
    return {key: tensor for key, tensor in targets.items() if key in keep}


@torch.no_grad()
def fill_model(
    model: nn.Module,
    cfg: ModelConfig,
    get: TensorSource,
    available: set[str],
    extra_rules: Iterable[ExpertStackingRule] = (),
) -> None:
    """Copy every parameter and buffer from `get`; raise naming every missing or mis-shaped tensor."""
    targets = _without_tied_aliases(dict(model.state_dict(keep_vars=True)), available)
    sources = checkpoint_sources(cfg, targets, available, extra_rules)
    problems = []
    for key, source in sources.items():
        needed = [source] if isinstance(source, str) else source.keys()
        absent = [name for name in needed if name not in available]
        if absent:
            problems.append(key if absent == [key] else f"{key} (from {absent[0]}, {len(absent)} missing)")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise KeyError(f"checkpoint lacks tensors for {len(problems)} model tensors: {shown}")
    for key, source in sources.items():
        if isinstance(source, str):
            _copy_checked(key, targets[key], get(source))
        else:  # expert by expert into the stacked tensor: no second copy of the stack
            for e in range(source.num_experts):
                _copy_checked(f"{key}[{e}]", targets[key][e], source.expert(get, e))


def _copy_checked(name: str, target: torch.Tensor, tensor: torch.Tensor) -> None:
    if tuple(tensor.shape) != tuple(target.shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(target.shape)}")
    target.copy_(tensor.to(target.dtype))

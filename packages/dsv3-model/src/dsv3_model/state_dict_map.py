"""Where each tensor of `DeepseekForCausalLM` comes from in a Hugging Face checkpoint — as data.

Every parameter and buffer has the HF key of the same name, except the stacked routed experts, whose
recipe the inventory declares (`dsv3_config.inventory.expert_stacks`: which per-expert HF tensors to
stack, and how gate and up are fused). `fill_model` applies the recipes to any tensor source (an
in-memory HF state dict in tests, the streaming checkpoint reader when loading), one expert at a time
(`dsv3_moe.expert_slice`), so peak memory is the model plus one source tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from dsv3_config import ModelConfig
from dsv3_config.inventory import ExpertStack, TensorDecl, expert_stacks
from dsv3_moe import expert_slice

TensorSource = Callable[[str], torch.Tensor]
Source = str | ExpertStack


def checkpoint_sources(
    cfg: ModelConfig, target_keys: Iterable[str], available: set[str], extra_stacks: Iterable[TensorDecl] = ()
) -> dict[str, Source]:
    """The HF source of each target key of our model's state dict.

    A stacked key already present in the source (transformers 5 keeps experts fused in memory) is
    taken as is; otherwise it is stacked from the per-expert tensors that checkpoints hold, by dsv3-moe's
    inventory's stacks and `extra_stacks` (e.g. the FP8 scales of experts kept resident, `dsv3_model.fp8_resident`).
    """
    stacks = {decl.name: decl for decl in (*expert_stacks(cfg), *extra_stacks)}
    sources: dict[str, Source] = {}
    for key in target_keys:
        prefix, _, local = key.partition(".mlp.")
        decl = stacks.get(local) if local else None
        if decl is None or decl.stacked_from is None or key in available:
            sources[key] = key
        else:
            stack = decl.under(f"{prefix}.mlp.").stacked_from
            assert stack is not None
            sources[key] = stack
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
    extra_stacks: Iterable[TensorDecl] = (),
) -> None:
    """Copy every parameter and buffer from `get`; raise naming every missing or mis-shaped tensor."""
    targets = _without_tied_aliases(dict(model.state_dict(keep_vars=True)), available)
    sources = checkpoint_sources(cfg, targets, available, extra_stacks)
    problems = []
    for key, source in sources.items():
        needed = [source] if isinstance(source, str) else source.all_source_keys()
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
                _copy_checked(f"{key}[{e}]", targets[key][e], expert_slice(source, get, e))


def _copy_checked(name: str, target: torch.Tensor, tensor: torch.Tensor) -> None:
    if tuple(tensor.shape) != tuple(target.shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(target.shape)}")
    target.copy_(tensor.to(target.dtype))

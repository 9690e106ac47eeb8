"""Which eager CPU kernels a loaded model runs: its reference layers (`nn.Linear`, dsv3-moe's
`GroupedExperts`), or their oneDNN-prepacked forms where those measured faster on this machine.

Why a step after loading, not a part of the model: packing reorders a loaded weight into an opaque
layout, so it can only happen once the weights are in place and cast, and the packed layers hold no
parameter (no `state_dict`, no autograd, no `torch.compile`). `load_causal_lm` and `random_causal_lm`
apply it by default (`kernels="measured"`), the inference entry points; `kernels="reference"` keeps
the plain module tree (for `state_dict`, training, the compiled decode step, bit-for-bit comparisons).

A `lm_head` kept in the checkpoint's dtype (`dsv3_model.stored_dtype`) is widened to the model dtype first:
eagerly, its per-call conversion cost more than the bytes it saved (fp32 FP8-resident medium preset: 12.8
tok/s against 21).

What is left plain: projections whose weight the attention reads as a matrix
(`dsv3_mla.MATRIX_READ_PROJECTIONS`), a `lm_head` tied to the embedding (packing would copy it), and
whatever the measurement did not find faster (`dsv3_blocks.packed_linear`, `dsv3_moe.packed_experts`:
timed once per process and shape, never chosen by CPU model or tensor values).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from torch import nn

from dsv3_blocks.packed_linear import PackedLinear, faster_linear
from dsv3_mla import MATRIX_READ_PROJECTIONS
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.stored_dtype import StoredDtypeLinear
from dsv3_moe import GroupedExperts
from dsv3_moe.packed_experts import PackedExperts, faster_experts

KernelChoice = Literal["measured", "reference"]
KERNEL_CHOICES: tuple[KernelChoice, ...] = ("measured", "reference")
EAGER_ONLY = (PackedLinear, PackedExperts)


def use_measured_kernels(model: DeepseekForCausalLM, *, everywhere: bool = False) -> dict[str, int]:
    """`swap_measured_kernels` over a causal LM (a `lm_head` tied to the embedding stays plain)."""
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    keep = (model.lm_head,) if tied else ()
    return swap_measured_kernels(model, model.config.num_experts_per_tok, keep, everywhere=everywhere)


def swap_measured_kernels(
    root: nn.Module, top_k: int, keep: tuple[nn.Module, ...] = (), *, everywhere: bool = False
) -> dict[str, int]:
    """Swap, in place, each eligible layer below `root` (not those in `keep`, nor the projections in
    `MATRIX_READ_PROJECTIONS`) for its packed form where measured faster, or wherever packing applies
    with `everywhere` (for tests and benchmarks of one form); `top_k` routes the experts' timing.
    Returns how many layers run each kind ("PackedLinear", "Linear", "PackedExperts", ...)."""
    kinds: Counter[str] = Counter()
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if any(child is kept for kept in keep):
                continue
            if type(child) is StoredDtypeLinear:  # eagerly, converting per call costs more than it saves
                child = child.widened()
                setattr(parent, name, child)
            if type(child) is nn.Linear and name not in MATRIX_READ_PROJECTIONS:
                replacement = faster_linear(child, measure=not everywhere)
            elif type(child) is GroupedExperts:
                replacement = faster_experts(child, top_k, measure=not everywhere)
            else:
                continue
            setattr(parent, name, replacement)
            kinds[type(replacement).__name__] += 1
    return dict(kinds)


def runs_eager_only_kernels(model: nn.Module) -> bool:
    """True when some layer is a packed eager kernel (the model then cannot be compiled)."""
    return any(isinstance(module, EAGER_ONLY) for module in model.modules())

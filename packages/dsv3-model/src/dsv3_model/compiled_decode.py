"""The decode step compiled once: `torch.compile(fullgraph=True, dynamic=False)` of
`DeepseekForCausalLM.step` for one token per row over the preallocated latent caches.

Why it compiles once: every shape in a decode step is fixed by the batch size and the cache buffers
(attention runs over the whole buffer with a mask, the MoE's compiled form has no data-dependent shape),
nothing reads a tensor value on the host, and the caches are updated in place (buffer and lengths), so
the same graph serves every step, and the step is CUDA-graph friendly (`mode="reduce-overhead"` on a GPU).
The host-side position check of `forward` is left to the caller: `generate` builds the positions from the
prompt lengths and the cache size, which bounds them by construction.

Shape legend: B batch rows, V vocabulary.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable

import torch

from dsv3_mla import LatentCache
from dsv3_model.causal_lm import DeepseekForCausalLM


class CompiledDecodeStep:
    """`step(next_ids_B, positions_B, caches) -> logits_BV`: one token per row, every token real. Every
    instance for one model shares the model's compiled step (`DeepseekForCausalLM.compiled_step`), so a
    second `generate` call with new cache objects of the same shapes compiles nothing.

    Guards: the first call with a list of caches runs every dynamo guard (and compiles if none of the
    model's graphs fits). Later calls with the same cache list run only the guards that tell the compiled
    graphs apart, every tensor guard among them (`torch.compiler.set_stance(skip_guard_eval_unsafe=True)`),
    because nothing else a guard reads changes between the steps of one decode: the model, its modules'
    attributes, the cache objects, the grad mode and the floating-point mode (part of the step's key) are
    those the full check passed (a call that would need a new graph under that stance raises, it does not
    run a wrong one). The rest of the guards (some 2,400 lines of dynamo's guard dump for the medium
    benchmark config) cost 0.2 of a 3.2 ms compiled FP8 decode step (2 threads, dev machine)."""

    def __init__(self, model: DeepseekForCausalLM, *, mode: str | None = None) -> None:
        self._step: Callable[..., torch.Tensor] = model.compiled_step(mode)
        self._checked_caches: list[LatentCache] | None = None

    def __call__(self, next_ids_B: torch.Tensor, positions_B: torch.Tensor, caches: list[LatentCache]) -> torch.Tensor:
        args = (next_ids_B[:, None], positions_B[:, None], caches, None)
        if caches is not self._checked_caches:
            logits_B1V = self._step(*args)
            self._checked_caches = caches
            return logits_B1V[:, 0]
        with _tensor_guards_only():
            return self._step(*args)[:, 0]


def _tensor_guards_only() -> contextlib.AbstractContextManager[object]:
    """`torch.compiler.set_stance(skip_guard_eval_unsafe=True)`, or nothing on a torch without it (< 2.6)."""
    if not _stance_skips_guards():
        return contextlib.nullcontext()
    return torch.compiler.set_stance(skip_guard_eval_unsafe=True)


@functools.cache
def _stance_skips_guards() -> bool:
    """Whether this torch's `set_stance` takes `skip_guard_eval_unsafe`: a fact of the installed torch, read
    once, not on every decode step."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance is not None and "skip_guard_eval_unsafe" in inspect.signature(set_stance).parameters

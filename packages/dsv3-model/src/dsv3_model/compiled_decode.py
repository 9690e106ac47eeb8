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

from collections.abc import Callable

import torch

from dsv3_mla import LatentCache
from dsv3_model.causal_lm import DeepseekForCausalLM


class CompiledDecodeStep:
    """`step(next_ids_B, positions_B, caches) -> logits_BV`: one token per row, every token real. Every
    instance for one model shares the model's compiled step (`DeepseekForCausalLM.compiled_step`), so a
    second `generate` call with new cache objects of the same shapes compiles nothing."""

    def __init__(self, model: DeepseekForCausalLM, *, mode: str | None = None) -> None:
        self._step: Callable[..., torch.Tensor] = model.compiled_step(mode)

    def __call__(self, next_ids_B: torch.Tensor, positions_B: torch.Tensor, caches: list[LatentCache]) -> torch.Tensor:
        return self._step(next_ids_B[:, None], positions_B[:, None], caches, None)[:, 0]

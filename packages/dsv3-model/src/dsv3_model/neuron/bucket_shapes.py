"""The per-bucket attributes NxDI sets on the traced module, derived from one call's input shapes.

Before tracing a bucket, NxDI's `DecoderModelInstance.get` sets `n_positions` on the module and, under
prefix caching, `prefix_size` and `n_active_tokens` (`models/model_wrapper.py:1548-1573`); the base
`forward` builds its attention masks from them (`models/model_base.py:197-215`, `:253-258`, `:803-812`)
and keeps a dummy input alive with `attention_mask[0] * 0` when `prefix_size` is 0 (`:1008-1014`). In CPU
mode (`to_cpu()`) nothing is traced: one module serves every bucket and those attributes keep their
`seq_len` defaults, so a bucket shorter than `seq_len`, or a prefill over cached blocks, gets masks of
the wrong size. The same values follow from the inputs' static shapes (the wrapper pads each input to
its bucket first), so `NeuronDsv3Model.forward` sets them on every call; on a Neuron host they equal the
constants the graph was traced with.
"""

from __future__ import annotations

from typing import Any

import torch


def bucket_attributes(neuron_config: Any, input_ids_BS: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, int]:
    """`n_positions` (and, under prefix caching, `prefix_size`, `n_active_tokens`) of the bucket these inputs fill.

    Prefix caching: `attention_mask` is `[B, P]` over the cached prefix (`[1]` zeros when there is none) and
    `input_ids` the active tokens; token generation (one active token) attends over the P slots, a prefill
    over `min(P + S, max_context_length)`. Otherwise `attention_mask` spans the bucket itself.
    """
    if not neuron_config.is_prefix_caching:
        return {"n_positions": attention_mask.shape[-1]}
    active = input_ids_BS.shape[1]
    prefix = attention_mask.shape[-1] if attention_mask.dim() == 2 else 0
    positions = prefix if active == 1 else min(prefix + active, neuron_config.max_context_length)
    return {"prefix_size": prefix, "n_active_tokens": active, "n_positions": positions}

"""Random weights for a preset (`dsv3 generate --preset tiny`): transformers' init, seeded.

Linear and embedding weights ~ N(0, 0.02) (HF `initializer_range`), norms 1, and the router's
correction bias ~ N(0, 0.1) so that bias-driven expert selection is exercised rather than flat.
Non-persistent buffers (rope's `inv_freq`) are left as the config made them.
"""

from __future__ import annotations

import torch
from torch import nn

INITIALIZER_RANGE = 0.02
CORRECTION_BIAS_STD = 0.1


@torch.no_grad()
def init_random_weights(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    # Only state: a non-persistent buffer (rope's inv_freq) is derived from the config, not a weight.
    persistent = model.state_dict(keep_vars=True).keys()
    buffers = [(name, tensor) for name, tensor in model.named_buffers() if name in persistent]
    for name, tensor in [*model.named_parameters(), *buffers]:
        if name.endswith("e_score_correction_bias"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * CORRECTION_BIAS_STD)
        elif name.endswith("norm.weight"):
            tensor.fill_(1.0)
        elif tensor.is_floating_point() and tensor.dim() >= 1:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * INITIALIZER_RANGE)

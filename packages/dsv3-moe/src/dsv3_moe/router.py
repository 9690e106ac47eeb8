"""`GroupLimitedRouter`: the MoE gate of every family member, with transformers' parameter names
(`weight` [E, H] and, for `noaux_tc`, the buffer `e_score_correction_bias` [E]), so HF state dicts load
strictly. Selection itself is `dsv3_moe.routing.route`.

Precision: the logits are computed in fp32 from an fp32 weight, and the weight and bias stay fp32 whatever
the model dtype. `_apply` (the hook behind `.to()`, `.half()`, `.bfloat16()`, `.cuda()`, `.to_empty()`) lets
the conversion move them to the new device but re-creates them in fp32 *from the fp32 originals*, so
`model.to(torch.bfloat16)` neither rounds nor changes them (transformers 4.57 rounds them to bf16 there;
docs/numerics.md section 6). Loading a bf16 checkpoint upcasts into the fp32 tensors exactly.

Shape legend: T tokens, H hidden size, E routed experts, K experts per token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsv3_config import ModelConfig
from dsv3_moe.routing import RoutingParams, route

_FP32_TENSORS = ("weight", "e_score_correction_bias")


class GroupLimitedRouter(nn.Module):
    """`router(hidden_[...]H) -> (topk_idx_TK int64, topk_weight_TK fp32)` over the flattened tokens."""

    e_score_correction_bias: torch.Tensor | None

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.params = RoutingParams.from_config(cfg)
        self.hidden_size = cfg.hidden_size
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size, dtype=torch.float32))
        bias = torch.zeros(cfg.n_routed_experts, dtype=torch.float32) if self.params.uses_correction_bias else None
        self.register_buffer("e_score_correction_bias", bias)
        nn.init.normal_(self.weight, std=cfg.hidden_size**-0.5)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"router input last dim must be hidden_size {self.hidden_size}, got {tuple(hidden.shape)}")
        hidden_TH = hidden.reshape(-1, self.hidden_size)
        logits_TE = F.linear(hidden_TH.to(torch.float32), self.weight.to(torch.float32))
        return route(logits_TE, self.e_score_correction_bias, self.params)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> GroupLimitedRouter:
        originals = {name: tensor.data for name in _FP32_TENSORS if (tensor := getattr(self, name)) is not None}
        super()._apply(fn, recurse)
        for name, original in originals.items():
            converted = getattr(self, name)
            if converted.dtype == torch.float32:
                continue
            restored = (
                converted.to(torch.float32)
                if original.is_meta or converted.is_meta
                else original.to(device=converted.device, dtype=torch.float32)
            )
            if name == "weight":
                self.weight.data = restored
            else:
                self._buffers[name] = restored
        return self

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"{p.topk_method}, experts={p.n_routed_experts}, groups={p.topk_group}/{p.n_group}, "
            f"top_k={p.num_experts_per_tok}, norm={p.norm_topk_prob}, scale={p.routed_scaling_factor}"
        )

"""`DeepseekMoE`: routed experts plus shared experts, from injected parts (torchtune's `MoE` shape), so a
backend swaps the experts (e.g. NxD's ExpertMLPsV2) or the shared MLP and keeps the router.

Submodule names are transformers': `gate` (the router), `experts`, `shared_experts`; the state dict then
matches HF's key for key except the stacked experts (`dsv3_moe.stacking`).

`out = experts(x, *gate(x)) + shared_experts(x)`, in that order, like transformers. Under expert
parallelism every rank holds the (tp-sharded) shared experts, so summing rank outputs would count them
`ep_size` times: build the modules of ranks with `ep_rank > 0` with `shared_experts=None` (the shard test
does), or reduce the shared output over tp only.

Shape legend: T tokens (all leading dims flattened), H hidden, K experts per token.
"""

from __future__ import annotations

import torch
from torch import nn

from dsv3_config import ModelConfig
from dsv3_moe.experts import GroupedExperts
from dsv3_moe.mlp import LinearFactory, SwiGLUMLP, default_linear_factory
from dsv3_moe.router import GroupLimitedRouter


class DeepseekMoE(nn.Module):
    """`router(x_TH) -> (idx_TK, weight_TK)`; `experts(x_TH, idx_TK, weight_TK) -> y_TH`; `shared(x) -> y`."""

    def __init__(self, *, router: nn.Module, experts: nn.Module, shared_experts: nn.Module | None) -> None:
        super().__init__()
        self.gate = router
        self.experts = experts
        self.shared_experts = shared_experts

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden_TH = hidden.reshape(-1, hidden.shape[-1])
        topk_idx_TK, topk_weight_TK = self.gate(hidden_TH)
        out_TH = self.experts(hidden_TH, topk_idx_TK, topk_weight_TK)
        if self.shared_experts is not None:
            out_TH = out_TH + self.shared_experts(hidden_TH)
        return out_TH.view(hidden.shape)


def build_deepseek_moe(
    cfg: ModelConfig, *, linear_factory: LinearFactory = default_linear_factory, experts: nn.Module | None = None
) -> DeepseekMoE:
    """The plain single-device MoE block a config describes: router, all routed experts, and the shared
    experts as one SwiGLU of width `moe_intermediate_size * n_shared_experts` (none when that is 0).
    A caller may inject the shared experts' projections (`linear_factory`) and the routed `experts`
    (e.g. weights kept FP8 and dequantized per matmul); the router stays this package's."""
    shared = (
        SwiGLUMLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts, linear_factory=linear_factory)
        if cfg.n_shared_experts
        else None
    )
    return DeepseekMoE(
        router=GroupLimitedRouter(cfg),
        experts=GroupedExperts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        if experts is None
        else experts,
        shared_experts=shared,
    )

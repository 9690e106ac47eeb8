"""The DeepSeek router as an NxD router: dsv3 semantics inside NxD's `MoE` / `ExpertMLPsV2`.

NxD's `GroupLimitedRouter` casts the affinities to the activation dtype (bf16) before the bias and
top-k, masks unselected groups with 0.0 instead of -inf, and returns unnormalized, unscaled
affinities (NxD `modules/moe/routing.py:384`, `:404-413`; docs/reference-port.md #4). Here the logits,
scores, bias, group choice and top-k all stay fp32 whatever the activation dtype, masked groups are
-inf, and the returned dense `[T, E]` affinities are already normalized (when `norm_topk_prob`) and
multiplied by `routed_scaling_factor`, so `ExpertMLPsV2` must run with `normalize_top_k_affinities`
off (`Dsv3NeuronConfig` sets it). The choice itself is dsv3-moe's pure `route`, the same function the
plain PyTorch model uses, so both backends pick the same experts.

Placement (`dsv3_moe.moe_shard_plan`, which `dsv3 shard` reads too): the weight is stored in the model
dtype (BF16, as the checkpoint's `gate.weight`) and split by expert over tp, a `ColumnParallelLinear`
holding `E / tp` rows per rank. Each rank computes its experts' logits in fp32 (full-length dot products,
weight upcast exactly), one all-gather over tp assembles the `[T, E]` fp32 logits on every rank, and every
rank then selects identically. The fp32 correction bias is replicated.

Shape legend: T tokens (B * S), H hidden size, E routed experts, L experts of this rank (E / tp), G expert
groups, K experts per token.
"""

from __future__ import annotations

import torch
from neuronx_distributed.modules.moe.routing import RouterBase
from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear
from neuronx_distributed.parallel_layers.mappings import gather_from_tensor_model_parallel_region
from torch import nn

from dsv3_config import ModelConfig
from dsv3_moe import RoutingParams, route


class Dsv3Router(RouterBase):
    """`linear_router` [E / tp, H] (HF `mlp.gate.weight`, split by expert) and, for `noaux_tc`,
    `e_score_correction_bias` [E] (replicated)."""

    def __init__(
        self, cfg: ModelConfig, *, dtype: torch.dtype = torch.bfloat16, sequence_parallel_enabled: bool = False
    ) -> None:
        super().__init__(
            num_experts=cfg.n_routed_experts,
            top_k=cfg.num_experts_per_tok,
            hidden_size=cfg.hidden_size,
            act_fn=cfg.scoring_func,
            sequence_parallel_enabled=sequence_parallel_enabled,
            sequence_dimension=1,
            dtype=torch.float32,
            device=torch.device("cpu"),
        )
        # RouterBase built a whole fp32 `nn.Linear`; the split one replaces it (Dsv3InferenceConfig checks E % tp).
        self.linear_router = ColumnParallelLinear(
            cfg.hidden_size, cfg.n_routed_experts, bias=False, gather_output=False, dtype=dtype
        )
        self.params = RoutingParams.from_config(cfg)
        self.e_score_correction_bias: nn.Parameter | None = None
        if self.params.uses_correction_bias:
            self.e_score_correction_bias = nn.Parameter(
                torch.zeros(cfg.n_routed_experts, dtype=torch.float32), requires_grad=False
            )

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router logits [T, E] fp32, dense affinities [T, E] fp32, expert ids [T, K] int64), NxD's order."""
        hidden_TH = hidden_states.reshape(-1, self.hidden_size).float()
        local_logits_TL = nn.functional.linear(hidden_TH, self.linear_router.weight.float())  # L = E / tp
        logits_TE = gather_from_tensor_model_parallel_region(local_logits_TL).reshape(-1, self.num_experts)
        expert_idx_TK, weights_TK = route(logits_TE, self.e_score_correction_bias, self.params)
        affinities_TE = torch.zeros_like(logits_TE).scatter(1, expert_idx_TK, weights_TK)
        return logits_TE, affinities_TE, expert_idx_TK.detach()

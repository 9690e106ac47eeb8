"""dsv3-mla's `MultiHeadLatentAttention` inside NxDI: NxD parallel linears injected, heads sharded by
tp (in CPU mode too), per-row RoPE positions, absorbed decode, the latent cached once.

NxDI's decoder-layer contract (docs/nxdi-contract.md section 5): context encoding (CTE) passes no cache and
a causal `[B, 1, S, S]` mask over token indices (which ignores right padding); token generation (TKG)
passes the layer's cache `[k, v]` sliced to the bucket and a `[B, 1, 1, T]` mask of the valid prior
slots, and writes this call's entries itself after the last layer, so the current token is *not* in
the cache yet. The layer therefore attends over `[prior cache | this call's entries]` and returns the
entries for NxDI to write, split as `LatentKVCacheManager` stores them (K = c_kv, V = k_pe).

Which projection is column-, row-parallel or replicated comes from `dsv3_mla.mla_shard_plan`, the same
plan `dsv3 shard` uses: `q_b_proj`/`q_proj`/`kv_b_proj` split output rows in whole heads
(ColumnParallelLinear, no gather), `o_proj` splits its input (RowParallelLinear, all-reduce; a bias is
added once after it), `q_a_proj`/`kv_a_proj_with_mqa` are replicated.

Shape legend: B batch, S query tokens, T key slots (prior + S), H local heads, n/r/v/c/C as in
`dsv3_mla.attention_math`, D_model hidden size.
"""

from __future__ import annotations

import torch
from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear, RowParallelLinear
from torch import nn

from dsv3_config import REPLICATED, ModelConfig, ShardPlan
from dsv3_mla import LinearFactory, MultiHeadLatentAttention, choose_path, mla_shard_plan


def nxd_linear_factory(plan: ShardPlan, dtype: torch.dtype) -> LinearFactory:
    """A dsv3-mla linear factory that builds NxD parallel layers as `plan` places each weight."""

    def build(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        placement = plan[f"{name}.weight"]
        if placement == REPLICATED:
            return nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
        if len(placement) != 1 or placement[0].mesh_axis != "tp":
            raise ValueError(f"{name}: placement {placement} is not a single tp split")
        if placement[0].dim == 0:
            return ColumnParallelLinear(in_features, out_features, bias=bias, gather_output=False, dtype=dtype)
        return RowParallelLinear(in_features, out_features, bias=bias, input_is_parallel=True, dtype=dtype)

    return build


class NeuronLatentAttention(MultiHeadLatentAttention):
    """MLA with NxD parallel linears and NxDI's cache protocol; HF submodule names, so HF keys load as is.

    Its forward composes dsv3-mla's public steps (`project`, `attend`, `output`) around NxDI's cache:
    only the latent view and the mask are NxDI's."""

    def __init__(self, cfg: ModelConfig, *, tp_degree: int, dtype: torch.dtype) -> None:
        super().__init__(cfg, linear_factory=nxd_linear_factory(mla_shard_plan(cfg), dtype), tp_size=tp_degree)

    def forward(  # type: ignore[override]
        self,
        hidden_BSD: torch.Tensor,
        position_ids_BS: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(o_proj output [B, S, D_model] reduced over tp, (c_kv [B, 1, S, c], k_pe [B, 1, S, r]) to cache)."""
        batch, seq, _ = hidden_BSD.shape
        q_nope_BSHn, q_pe_BSHr, new_BSC = self.project(hidden_BSD, position_ids_BS)
        if past_key_value is None:
            kv_BTC, visible_BST = new_BSC, attention_mask[:, 0].to(torch.bool).expand(batch, seq, seq)
            path = choose_path(self.cfg, seq, seq)
        else:
            kv_BTC, visible_BST = self._with_prior(new_BSC, past_key_value, attention_mask)
            path = choose_path(self.cfg, seq, kv_BTC.shape[1])
        out_BSD = self.output(self.attend(q_nope_BSHn, q_pe_BSHr, kv_BTC, visible_BST, path))
        c_kv_BSc, k_pe_BSr = new_BSC.split([self.cfg.kv_lora_rank, self.cfg.qk_rope_head_dim], dim=-1)
        return out_BSD, (c_kv_BSc[:, None], k_pe_BSr[:, None])

    def _with_prior(
        self,
        new_BSC: torch.Tensor,
        past_key_value: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys `[prior cache | this call]` and what each query sees: valid prior slots, then causal among the new.

        The prior is the bucket's slice of the contiguous cache in token generation, or the blocks
        `active_block_table` names (block layout), in token generation and in a prefill over cached
        blocks (prefix caching, chunked prefill). `attention_mask` marks its valid slots: `[B, 1, 1, P]`
        in token generation, `[B, P]` (NxDI passes the prefix mask unexpanded) in such a prefill."""
        c_kv_B1Pc, k_pe_B1Pr = past_key_value
        batch, seq, _ = new_BSC.shape
        prior_BPC = torch.cat([c_kv_B1Pc[:, 0], k_pe_B1Pr[:, 0]], dim=-1).to(new_BSC.dtype)
        prior_valid_B1P = attention_mask.to(torch.bool).reshape(batch, 1, prior_BPC.shape[1])
        prior_visible_BSP = prior_valid_B1P.expand(batch, seq, prior_BPC.shape[1])
        causal_SS = torch.ones(seq, seq, dtype=torch.bool, device=new_BSC.device).tril()
        visible_BST = torch.cat([prior_visible_BSP, causal_SS.expand(batch, seq, seq)], dim=-1)
        return torch.cat([prior_BPC, new_BSC], dim=1), visible_BST

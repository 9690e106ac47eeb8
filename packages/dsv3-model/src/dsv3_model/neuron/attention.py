"""dsv3-mla's `MultiHeadLatentAttention` inside NxDI: NxD parallel linears injected, heads sharded by
tp (in CPU mode too), per-row RoPE positions, absorbed decode, the latent cached once.

NxDI's decoder-layer contract (docs/nxdi-contract.md section 5): context encoding (CTE) passes no cache and
a causal `[B, 1, S, S]` mask over token indices (which ignores right padding; with left padding it also
hides the padding keys, NxDI `model_base.py:197-215`). CTE does not read that mask whole: it attends with
a factored `KeyVisibility` (causal by token index; key validity from the mask's last row, only with left
padding), so beyond one key block the blocked form runs and no `[S, S]` tensor is built. Token generation (TKG)
passes the layer's cache `[k, v]` sliced to the bucket and a `[B, 1, 1, T]` mask of the valid prior
slots, and writes this call's entries itself after the last layer, so the current token is *not* in
the cache yet. The layer therefore attends over `[prior cache | this call's entries]` and returns the
entries for NxDI to write, split as `LatentKVCacheManager` stores them (K = c_kv, V = k_pe).

Which projection is column-, row-parallel or replicated comes from `dsv3_mla.mla_shard_plan`, the same
plan `dsv3 shard` uses: `q_b_proj`/`q_proj`/`kv_b_proj` split output rows in whole heads
(ColumnParallelLinear, no gather), `o_proj` splits its input (RowParallelLinear, all-reduce; a bias is
added once after it). `q_a_proj`/`kv_a_proj_with_mqa` split their input too (RowParallelLinear over the
replicated hidden state: each rank takes its hidden/tp columns), and `latents` sums both partial outputs
in ONE fp32 all-reduce of the concatenated `q_lora_rank + kv_lora_rank + qk_rope_head_dim` values per
token (2112 for V3), then adds the biases once: every rank holds the full latent for the latent norms,
its heads and the cache, and a rank keeps 1/tp of those weights instead of all of them.

Shape legend: B batch, S query tokens, T key slots (prior + S), H local heads, n/r/v/c/C as in
`dsv3_mla.attention_math`, D_model hidden size.
"""

from __future__ import annotations

import torch
from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear, RowParallelLinear
from neuronx_distributed.parallel_layers.mappings import reduce_from_tensor_model_parallel_region
from neuronx_distributed.quantization.quantization_layers import QuantizedRowParallel
from torch import nn

from dsv3_config import REPLICATED, ModelConfig, ShardPlan
from dsv3_config.inventory import attention_tensors
from dsv3_mla import KeyVisibility, LinearFactory, MultiHeadLatentAttention, choose_path, mla_shard_plan
from dsv3_model.neuron.fp8_linears import Fp8Linears

LATENT_PROJECTIONS = ("q_a_proj", "kv_a_proj_with_mqa")
ROW_PARALLEL = (RowParallelLinear, QuantizedRowParallel)


def nxd_linear_factory(plan: ShardPlan, dtype: torch.dtype, fp8: Fp8Linears | None = None) -> LinearFactory:
    """A dsv3-mla linear factory that builds NxD parallel layers as `plan` places each weight, the ones `fp8`
    names as NxD's blockwise FP8 layers (weights `fp8`)."""

    def build(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        placement = plan[f"{name}.weight"]
        if placement == REPLICATED:
            return nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
        if len(placement) != 1 or placement[0].mesh_axis != "tp":
            raise ValueError(f"{name}: placement {placement} is not a single tp split")
        layer: nn.Module
        if placement[0].dim == 0:
            layer = ColumnParallelLinear(in_features, out_features, bias=bias, gather_output=False, dtype=dtype)
        elif name in LATENT_PROJECTIONS:  # replicated input, partial output: `latents` reduces and adds the bias
            layer = RowParallelLinear(
                in_features, out_features, bias=bias, dtype=dtype, reduce_output=False, skip_bias_add=True
            )
        else:
            layer = RowParallelLinear(in_features, out_features, bias=bias, input_is_parallel=True, dtype=dtype)
        return layer if fp8 is None else fp8.apply(name, layer)

    return build


def _partial(projection: nn.Module, hidden_BSD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(partial [B, S, out], bias or None) of a latent projection: `RowParallelLinear(skip_bias_add=True)` returns
    both; NxD's FP8 `QuantizedRowParallel` (built only without a bias, `fp8_linears`) the product alone."""
    out = projection(hidden_BSD)
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


class NeuronLatentAttention(MultiHeadLatentAttention):
    """MLA with NxD parallel linears and NxDI's cache protocol; HF submodule names, so HF keys load as is.

    Its forward composes dsv3-mla's public steps (`project`, `attend`, `output`) around NxDI's cache:
    only the latent view and the mask are NxDI's."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        tp_degree: int,
        dtype: torch.dtype,
        padding_side: str = "right",
        fp8_linears: bool = False,
    ) -> None:
        fp8 = Fp8Linears.of(cfg, attention_tensors(cfg)) if fp8_linears else None
        factory = nxd_linear_factory(mla_shard_plan(cfg), dtype, fp8)
        super().__init__(cfg, linear_factory=factory, tp_size=tp_degree)
        self.padding_side = padding_side  # NeuronConfig.padding_side: what NxDI's CTE mask encodes

    def latents(self, hidden_BSD: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The full latents on every rank from row-parallel `q_a_proj`/`kv_a_proj_with_mqa`: each rank's partial
        products over its hidden columns, concatenated, summed in fp32 by one all-reduce (what RowParallelLinear
        does for one layer), then split and the biases added once."""
        projections = (
            [self.kv_a_proj_with_mqa] if self.cfg.q_lora_rank is None else [self.q_a_proj, self.kv_a_proj_with_mqa]
        )
        if not isinstance(projections[0], ROW_PARALLEL):  # a plan that replicates them: plain linears
            return super().latents(hidden_BSD)
        partials = [_partial(projection, hidden_BSD) for projection in projections]
        partial_BSX = torch.cat([out for out, _ in partials], dim=-1)
        full_BSX = reduce_from_tensor_model_parallel_region(partial_BSX.to(torch.float32)).to(hidden_BSD.dtype)
        pieces = full_BSX.split([out.shape[-1] for out, _ in partials], dim=-1)
        latents = [piece if bias is None else piece + bias for piece, (_, bias) in zip(pieces, partials, strict=True)]
        return (None, latents[0]) if len(latents) == 1 else (latents[0], latents[1])

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
        visible_BST: KeyVisibility | torch.Tensor
        if past_key_value is None:
            kv_BTC, visible_BST = new_BSC, self._context_visibility(attention_mask, batch, seq)
            path = choose_path(self.cfg, seq, seq)
        else:
            kv_BTC, visible_BST = self._with_prior(new_BSC, past_key_value, attention_mask)
            path = choose_path(self.cfg, seq, kv_BTC.shape[1])
        out_BSD = self.output(self.attend(q_nope_BSHn, q_pe_BSHr, kv_BTC, visible_BST, path))
        c_kv_BSc, k_pe_BSr = new_BSC.split([self.cfg.kv_lora_rank, self.cfg.qk_rope_head_dim], dim=-1)
        return out_BSD, (c_kv_BSc[:, None], k_pe_BSr[:, None])

    def _context_visibility(self, attention_mask: torch.Tensor, batch: int, seq: int) -> KeyVisibility:
        """NxDI's CTE mask, factored: key j visible to query i iff j <= i (token indices), and with left
        padding iff the mask's last row (which sees every earlier key) shows j."""
        # int32 as NxDI's position ids: the per-block compare broadcasts them to [B, S, block]
        index_BS = torch.arange(seq, dtype=torch.int32, device=attention_mask.device).expand(batch, seq)
        key_valid_BS = None if self.padding_side == "right" else attention_mask[:, 0, -1].to(torch.bool)
        return KeyVisibility(index_BS, index_BS, key_valid_BS)

    def _with_prior(
        self,
        new_BSC: torch.Tensor,
        past_key_value: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, KeyVisibility]:
        """Keys `[prior cache | this call]` and what each query sees: valid prior slots, then causal among the new.

        The prior is the bucket's slice of the contiguous cache in token generation, or the blocks
        `active_block_table` names (block layout), in token generation and in a prefill over cached
        blocks (prefix caching, chunked prefill). `attention_mask` marks its valid slots: `[B, 1, 1, P]`
        in token generation, `[B, P]` (NxDI passes the prefix mask unexpanded) in such a prefill.
        Factored by slot index (query s at P + s, every prior slot before it), so a long chunk over a long
        prefix runs blocked without a `[S, P + S]` mask."""
        c_kv_B1Pc, k_pe_B1Pr = past_key_value
        batch, seq, _ = new_BSC.shape
        prior_BPC = torch.cat([c_kv_B1Pc[:, 0], k_pe_B1Pr[:, 0]], dim=-1).to(new_BSC.dtype)
        prior = prior_BPC.shape[1]
        prior_valid_BP = attention_mask.to(torch.bool).reshape(batch, prior)
        new_valid_BS = torch.ones(batch, seq, dtype=torch.bool, device=new_BSC.device)
        # int32 as NxDI's position ids (the per-block compare broadcasts them to [B, S, block])
        slot_BT = torch.arange(prior + seq, dtype=torch.int32, device=new_BSC.device).expand(batch, prior + seq)
        visible = KeyVisibility(slot_BT[:, prior:], slot_BT, torch.cat([prior_valid_BP, new_valid_BS], dim=1))
        return torch.cat([prior_BPC, new_BSC], dim=1), visible

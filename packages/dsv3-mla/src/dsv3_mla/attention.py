"""`MultiHeadLatentAttention`: DeepSeek's MLA layer with HF's parameter names, injected linear layers,
a compressed latent cache and two attention forms chosen per call.

Submodules are named as in transformers' `DeepseekV3Attention` (q_a_proj, q_a_layernorm, q_b_proj —
or q_proj when q_lora_rank is null — kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj), so an HF
layer's `self_attn.state_dict()` loads with `strict=True`. With `tp_size > 1` and a linear factory
that builds the local shards of `mla_shard_plan`, the module computes its `H / tp_size` heads and
returns its partial `o_proj` output; the caller sums over ranks. The latent projections are split by
their input (row-parallel) there, so the factory's modules for them must return the *full* latent (the
sum over ranks, one collective; `latents` is where a backend fuses the two).

Padding convention: rows are right-padded. `seq_lengths_B` (default: all S tokens) gives the real
tokens of each row; padding tokens are neither cached nor visible to real tokens, and their own
outputs are unspecified (finite). Each token attends to the cached slots `<=` its position.

Shape legend: B batch, S tokens, T key slots, H local heads, n/r/v/c/C as in `attention_math`,
D = hidden_size.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dsv3_blocks import LinearFactory, RMSNorm, default_linear_factory
from dsv3_config import ModelConfig
from dsv3_mla.attention_blocked import KEY_BLOCK, KeyVisibility, Visibility
from dsv3_mla.attention_math import (
    AttentionPath,
    absorbed_attention,
    choose_path,
    expanded_attention,
)
from dsv3_mla.cache import LatentCache
from dsv3_rope import RotaryEmbedding, apply_rotary

# transformers' DeepseekV3Attention builds q_a_layernorm / kv_a_layernorm with the class default 1e-6
# and ignores rms_norm_eps; DeepSeek's inference/model.py does the same (docs/numerics.md section 5).
LATENT_NORM_EPS = 1e-6

PathChoice = Literal["auto", "absorbed", "expanded"]


# Projections whose `.weight` the absorbed attention form reads as a matrix (`kv_b_weight_HXc`), not only
# through the layer's product: whatever replaces projections (FP8 kept resident, prepacked CPU kernels)
# must leave these as layers with a plain weight.
MATRIX_READ_PROJECTIONS = ("kv_b_proj",)


class MultiHeadLatentAttention(nn.Module):
    def __init__(
        self, cfg: ModelConfig, *, linear_factory: LinearFactory = default_linear_factory, tp_size: int = 1
    ) -> None:
        super().__init__()
        if tp_size < 1 or cfg.num_attention_heads % tp_size:
            raise ValueError(f"tp_size ({tp_size}) must divide num_attention_heads ({cfg.num_attention_heads})")
        self.cfg = cfg
        self.num_local_heads = cfg.num_attention_heads // tp_size
        self.softmax_scale = cfg.softmax_scale
        heads, hidden = cfg.num_attention_heads, cfg.hidden_size
        if cfg.q_lora_rank is None:
            self.q_proj = linear_factory("q_proj", hidden, heads * cfg.qk_head_dim, False)
        else:
            self.q_a_proj = linear_factory("q_a_proj", hidden, cfg.q_lora_rank, cfg.attention_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = linear_factory("q_b_proj", cfg.q_lora_rank, heads * cfg.qk_head_dim, False)
        self.kv_a_proj_with_mqa = linear_factory(
            "kv_a_proj_with_mqa", hidden, cfg.latent_cache_width, cfg.attention_bias
        )
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, LATENT_NORM_EPS)
        self.kv_b_proj = linear_factory(
            "kv_b_proj", cfg.kv_lora_rank, heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), False
        )
        self.o_proj = linear_factory("o_proj", heads * cfg.v_head_dim, hidden, cfg.attention_bias)
        self.rotary_emb = RotaryEmbedding(cfg)

    def forward(
        self,
        hidden_BSD: torch.Tensor,
        position_ids_BS: torch.Tensor,
        cache: LatentCache | None = None,
        *,
        seq_lengths_B: torch.Tensor | None = None,
        path: PathChoice = "auto",
    ) -> torch.Tensor:
        """Attention output [B, S, hidden] (partial over ranks when sharded): `project`, then `attend`, then
        `output`, over the cache or over this call's tokens.

        With a cache, this call's latents are written first, then every token attends to its row's
        cached slots `0..position`, masked over the whole preallocated buffer (prefill, chunked prefill
        and decode alike: the shapes depend only on the call and the buffer, never on the cached lengths).
        Positions must lie in the cache (`LatentCache.check_positions`, done once where ids enter: the
        write itself checks nothing, so that it traces). Without a cache, tokens attend within the call.
        `path` "auto" applies `choose_path` to the static shapes.
        """
        batch, seq, _ = hidden_BSD.shape
        if position_ids_BS.shape != (batch, seq):
            raise ValueError(f"position_ids_BS {tuple(position_ids_BS.shape)} must be [B, S] = {(batch, seq)}")
        if path not in ("auto", "absorbed", "expanded"):
            raise ValueError(f"path must be 'auto', 'absorbed' or 'expanded', got {path!r}")
        q_nope_BSHn, q_pe_BSHr, kv_BSC = self.project(hidden_BSD, position_ids_BS)
        visible_BST: Visibility
        if cache is None:
            visible_BST, kv_BTC = self_visibility(position_ids_BS, seq_lengths_B), kv_BSC
        else:
            cache.write(position_ids_BS, kv_BSC, seq_lengths_B)
            visible_BST, kv_BTC = cache.visibility(position_ids_BS), cache.buffer_BTC
        chosen = choose_path(self.cfg, seq, kv_BTC.shape[1]) if path == "auto" else path
        return self.output(self.attend(q_nope_BSHn, q_pe_BSHr, kv_BTC, visible_BST, chosen))

    def project(
        self, hidden_BSD: torch.Tensor, position_ids_BS: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 1: `(q_nope_BSHn, rotated q_pe_BSHr, kv_BSC)`, the last being this call's cache entries
        `[kv_a_layernorm(c_kv) | rotated k_pe]` (what a cache stores, in any backend's layout)."""
        cfg = self.cfg
        cos_BSr, sin_BSr = self.rotary_emb(position_ids_BS)
        q_latent_BSq, kv_latent_BSC = self.latents(hidden_BSD)
        if q_latent_BSq is None:
            q_BSX = self.q_proj(hidden_BSD)
        else:
            q_BSX = self.q_b_proj(self.q_a_layernorm(q_latent_BSq))
        q_BSHq = q_BSX.unflatten(-1, (self.num_local_heads, cfg.qk_head_dim))
        q_nope_BSHn, q_pe_BSHr = q_BSHq.split([cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)
        c_kv_BSc, k_pe_BSr = kv_latent_BSC.split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        # q_pe and the shared k_pe rotate together, k_pe as one more head.
        pe_BSXr = apply_rotary(torch.cat([q_pe_BSHr, k_pe_BSr[:, :, None, :]], dim=2), cos_BSr, sin_BSr)
        kv_BSC = torch.cat([self.kv_a_layernorm(c_kv_BSc), pe_BSXr[:, :, -1, :]], dim=-1)
        return q_nope_BSHn, pe_BSXr[:, :, :-1, :], kv_BSC

    def latents(self, hidden_BSD: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Step 1a: `(q_a_proj(hidden) or None without q LoRA, kv_a_proj_with_mqa(hidden))`, the full latents
        before their norms. Its own method so a backend that splits these projections over ranks (row-parallel,
        `mla_shard_plan`) can fuse them into one collective; every rank needs the whole latent."""
        q_latent_BSq = None if self.cfg.q_lora_rank is None else self.q_a_proj(hidden_BSD)
        return q_latent_BSq, self.kv_a_proj_with_mqa(hidden_BSD)

    def attend(
        self,
        q_nope_BSHn: torch.Tensor,
        q_pe_BSHr: torch.Tensor,
        kv_BTC: torch.Tensor,
        visible_BST: Visibility,
        path: AttentionPath,
        key_block: int = KEY_BLOCK,
    ) -> torch.Tensor:
        """Step 2: `o_BSHv` over the latent view `kv_BTC` (any T slots: a whole cache buffer, a backend's
        `[prior | new]` concatenation) and its visibility (a `[B, S, T]` mask, a factored `KeyVisibility`,
        or None: every slot visible), in the given form (`choose_path` picks one from the shapes). When
        queries and keys both exceed `key_block`, the form runs over key blocks with a running max and sum
        (`attention_blocked`): memory linear in S, and with a `KeyVisibility` no `[B, S, T]` mask either."""
        if path == "absorbed":
            return absorbed_attention(
                q_nope_BSHn, q_pe_BSHr, kv_BTC, self.kv_b_weight_HXc(), visible_BST, self.softmax_scale, key_block
            )
        c, n = self.cfg.kv_lora_rank, self.cfg.qk_nope_head_dim
        kv_BTHX = self.kv_b_proj(kv_BTC[..., :c]).unflatten(-1, (self.num_local_heads, n + self.cfg.v_head_dim))
        k_nope_BTHn, v_BTHv = kv_BTHX.split([n, self.cfg.v_head_dim], dim=-1)
        return expanded_attention(
            q_nope_BSHn, q_pe_BSHr, k_nope_BTHn, kv_BTC[..., c:], v_BTHv, visible_BST, self.softmax_scale, key_block
        )

    def output(self, o_BSHv: torch.Tensor) -> torch.Tensor:
        """Step 3: `o_proj` over the heads, [B, S, hidden] (a partial sum over ranks when sharded)."""
        batch, seq = o_BSHv.shape[:2]
        return self.o_proj(o_BSHv.reshape(batch, seq, self.num_local_heads * self.cfg.v_head_dim))

    def kv_b_weight_HXc(self) -> torch.Tensor:
        """`kv_b_proj.weight` viewed [H, qk_nope + v, kv_lora_rank], as the absorbed form reads it."""
        weight = self.kv_b_proj.weight
        expected = (self.num_local_heads * (self.cfg.qk_nope_head_dim + self.cfg.v_head_dim), self.cfg.kv_lora_rank)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != expected:
            raise ValueError(
                f"absorbed path needs kv_b_proj.weight of shape {expected} (local heads), got {weight!r:.80}"
            )
        return weight.view(self.num_local_heads, -1, self.cfg.kv_lora_rank)


def self_visibility(position_ids_BS: torch.Tensor, seq_lengths_B: torch.Tensor | None) -> KeyVisibility:
    """Visibility for attention within one call, factored (never an [S, S] tensor on the blocked path):
    causal by position, padding tokens (index >= `seq_lengths_B`) hidden."""
    batch, seq = position_ids_BS.shape
    if seq_lengths_B is None:
        valid_BT = torch.ones(batch, seq, dtype=torch.bool, device=position_ids_BS.device)
    else:
        valid_BT = torch.arange(seq, device=position_ids_BS.device)[None, :] < seq_lengths_B[:, None]
    return KeyVisibility(position_ids_BS, position_ids_BS, valid_BT)

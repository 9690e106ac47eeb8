"""MLA's two algebraically equal attention forms, as pure functions over the latent.

Expanded: decompress every key/value through `kv_b_proj` (per head K = [k_nope | k_pe], V), then
ordinary attention. Costs T * kv_lora * H * (nope + v) for the decompression; right for long prefill.

Absorbed (DeepSeek's `attn_impl = "absorb"`, docs/numerics.md section 4): with W = kv_b_proj.weight viewed
[H, nope + v, c], fold W_UK = W[:, :nope] into the query (q_lat = q_nope W_UK) and W_UV = W[:, nope:]
into the output (o = (P c_kv) W_UV^T). Scores read the cached `[c_kv | k_pe]` once as one matrix;
no per-head key is ever built. Right for decode. The V slice starts at `qk_nope_head_dim`, so
v_head_dim != qk_nope_head_dim is handled (the contrib port slices by v_head_dim).

Both: softmax in fp32 over `scores * softmax_scale` with masked entries at the fp32 minimum (a fully
masked padding row stays finite), probabilities cast back to the activation dtype. When the queries and
the keys both exceed one key block (`key_block`, a long prefill), both run over key blocks with a running
max and sum instead (`attention_blocked`: memory linear in the prompt, the same values to fp32 rounding).
Visibility is a `[B, S, T]` mask, a factored `KeyVisibility` (never materialized whole on the blocked
path) or None (all visible).

Shape legend: B batch, S query tokens, T key slots, H (local) heads, n = qk_nope_head_dim,
r = qk_rope_head_dim, v = v_head_dim, c = kv_lora_rank, C = c + r (cache width).
"""

from __future__ import annotations

from typing import Literal

import torch

from dsv3_config import ModelConfig
from dsv3_mla.attention_blocked import (
    KEY_BLOCK,
    KeyVisibility,
    Visibility,
    block_visibility,
    dense_visibility,
    is_blocked,
    online_softmax,
)

AttentionPath = Literal["absorbed", "expanded"]


def choose_path(cfg: ModelConfig, num_queries: int, num_keys: int) -> AttentionPath:
    """The form with fewer multiply-adds per head (independent of the head count):

    expanded = T * c * (n + v) + S * T * (n + r + v);  absorbed = S * c * (n + v) + S * T * (2c + r).

    Decode (S = 1) is absorbed for any T > 1; a fresh prefill (S = T) is expanded whenever
    n + v < 2c, true for every published shape (V3: 256 < 1024). Ties go to absorbed (it reads less memory).
    """
    c, n, r, v = cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    expanded = num_keys * c * (n + v) + num_queries * num_keys * (n + r + v)
    absorbed = num_queries * c * (n + v) + num_queries * num_keys * (2 * c + r)
    return "absorbed" if absorbed <= expanded else "expanded"


def visibility_mask(
    query_positions_BS: torch.Tensor, key_positions_BT: torch.Tensor, key_valid_BT: torch.Tensor
) -> torch.Tensor:
    """[B, S, T] bool: key t is visible to query s iff it is valid and not after it (causal by position)."""
    return KeyVisibility(query_positions_BS, key_positions_BT, key_valid_BT).dense()


def masked_softmax(scores: torch.Tensor, visible: torch.Tensor | None, scale: float) -> torch.Tensor:
    """fp32 softmax over the last axis of `scores * scale`, hidden entries (`visible` False, broadcast
    against `scores`) at the fp32 minimum; `visible` None: every entry visible (decode over a full cache,
    where the mask pass is the largest elementwise cost). Returned in the scores' dtype."""
    scores32 = scores.to(torch.float32)
    if scale != 1.0:
        scores32 = scores32 * scale
    if visible is not None:
        scores32 = scores32.masked_fill(~visible, torch.finfo(torch.float32).min)
    return torch.softmax(scores32, dim=-1).to(scores.dtype)


def expanded_attention(
    q_nope_BSHn: torch.Tensor,
    q_pe_BSHr: torch.Tensor,
    k_nope_BTHn: torch.Tensor,
    k_pe_BTr: torch.Tensor,
    v_BTHv: torch.Tensor,
    visible_BST: Visibility,
    scale: float,
    key_block: int = KEY_BLOCK,
) -> torch.Tensor:
    """Per-head attention over decompressed keys (`visible_BST` None: all visible); returns o_BSHv."""
    if is_blocked(q_nope_BSHn.shape[1], k_nope_BTHn.shape[1], key_block):
        return _expanded_blocked(q_nope_BSHn, q_pe_BSHr, k_nope_BTHn, k_pe_BTr, v_BTHv, visible_BST, scale, key_block)
    visible = dense_visibility(visible_BST)
    scores_BHST = torch.einsum("bshn,bthn->bhst", q_nope_BSHn, k_nope_BTHn)
    scores_BHST = scores_BHST + torch.einsum("bshr,btr->bhst", q_pe_BSHr, k_pe_BTr)
    probs_BHST = masked_softmax(scores_BHST, None if visible is None else visible[:, None], scale)
    return torch.einsum("bhst,bthv->bshv", probs_BHST, v_BTHv)


def _expanded_blocked(
    q_nope_BSHn: torch.Tensor,
    q_pe_BSHr: torch.Tensor,
    k_nope_BTHn: torch.Tensor,
    k_pe_BTr: torch.Tensor,
    v_BTHv: torch.Tensor,
    visible: Visibility,
    scale: float,
    key_block: int,
) -> torch.Tensor:
    """`expanded_attention` over key blocks: one `[B, H, S, b]` score block at a time."""

    def scores(start: int, stop: int) -> torch.Tensor:
        scores_BHSb = torch.einsum("bshn,bthn->bhst", q_nope_BSHn, k_nope_BTHn[:, start:stop])
        scores_BHSb = scores_BHSb + torch.einsum("bshr,btr->bhst", q_pe_BSHr, k_pe_BTr[:, start:stop])
        return scores_BHSb.to(torch.float32) * scale

    def mask(start: int, stop: int) -> torch.Tensor | None:
        visible_BSb = block_visibility(visible, start, stop)
        return None if visible_BSb is None else visible_BSb[:, None]

    def weighted_sum(weights_BHSb: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return torch.einsum("bhst,bthv->bhsv", weights_BHSb.to(v_BTHv.dtype), v_BTHv[:, start:stop])

    o_BHSv = online_softmax(k_nope_BTHn.shape[1], key_block, scores, mask, weighted_sum)
    return o_BHSv.transpose(1, 2).to(v_BTHv.dtype)


def absorbed_attention(
    q_nope_BSHn: torch.Tensor,
    q_pe_BSHr: torch.Tensor,
    kv_BTC: torch.Tensor,
    w_kv_b_HXc: torch.Tensor,
    visible_BST: Visibility,
    scale: float,
    key_block: int = KEY_BLOCK,
) -> torch.Tensor:
    """Attention computed in latent space (`visible_BST` None: all visible); returns o_BSHv.

    `kv_BTC` is `[c_kv | k_pe]` per slot (the cache itself); `w_kv_b_HXc` is kv_b_proj.weight viewed
    [H, n + v, c]. The softmax scale is folded into the (small) query instead of the scores.
    Layout choices are measured (benchmarks/bench_mla.py): the scores are one `[T, C] @ [C, S*H]`
    matmul per row (the long cache axis as M suits the BLAS best), transposed once to `[S*H, T]`; the
    weighted sum is `probs @ c_kv` (measured 1.45x faster at 8K than `c_kv^T @ probs^T`).
    """
    batch, seq, heads, n = q_nope_BSHn.shape
    c = w_kv_b_HXc.shape[-1]
    w_uk_Hnc, w_uv_Hvc = w_kv_b_HXc[:, :n], w_kv_b_HXc[:, n:]
    # q_lat[h] = q_nope[h] @ W_UK[h]: one batched matmul over heads, rows = B*S tokens.
    q_nope_HMn = q_nope_BSHn.permute(2, 0, 1, 3).reshape(heads, batch * seq, n)
    q_lat_BSHc = torch.bmm(q_nope_HMn, w_uk_Hnc).view(heads, batch, seq, c).permute(1, 2, 0, 3)
    q_BRC = (torch.cat([q_lat_BSHc, q_pe_BSHr], dim=-1) * scale).reshape(batch, seq * heads, -1)
    if is_blocked(seq, kv_BTC.shape[1], key_block):
        o_lat_BRc = _absorbed_blocked(q_BRC, kv_BTC, c, heads, visible_BST, key_block)
    else:
        visible = dense_visibility(visible_BST)
        scores_BSHT = torch.bmm(kv_BTC, q_BRC.transpose(1, 2)).transpose(1, 2).reshape(batch, seq, heads, -1)
        visible_BS1T = None if visible is None else visible[:, :, None]
        probs_BRT = masked_softmax(scores_BSHT, visible_BS1T, 1.0).view(batch, seq * heads, -1)
        o_lat_BRc = torch.bmm(probs_BRT, kv_BTC[..., :c])
    # o[h] = o_lat[h] @ W_UV[h]^T, again batched over heads.
    o_lat_HMc = o_lat_BRc.view(batch, seq, heads, c).permute(2, 0, 1, 3).reshape(heads, batch * seq, c)
    o_HMv = torch.bmm(o_lat_HMc, w_uv_Hvc.transpose(1, 2))
    return o_HMv.view(heads, batch, seq, -1).permute(1, 2, 0, 3)


def _absorbed_blocked(
    q_BRC: torch.Tensor, kv_BTC: torch.Tensor, c: int, heads: int, visible: Visibility, key_block: int
) -> torch.Tensor:
    """The absorbed form's `softmax(q kv^T) c_kv` over key blocks (R = S*H query rows); returns o_lat_BRc."""
    batch, rows, _ = q_BRC.shape

    def scores(start: int, stop: int) -> torch.Tensor:
        return torch.bmm(q_BRC, kv_BTC[:, start:stop].transpose(1, 2)).to(torch.float32)

    def mask(start: int, stop: int) -> torch.Tensor | None:
        visible_BSb = block_visibility(visible, start, stop)
        if visible_BSb is None:
            return None
        return visible_BSb[:, :, None].expand(-1, -1, heads, -1).reshape(batch, rows, stop - start)

    def weighted_sum(weights_BRb: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return torch.bmm(weights_BRb.to(kv_BTC.dtype), kv_BTC[:, start:stop, :c])

    return online_softmax(kv_BTC.shape[1], key_block, scores, mask, weighted_sum).to(kv_BTC.dtype)

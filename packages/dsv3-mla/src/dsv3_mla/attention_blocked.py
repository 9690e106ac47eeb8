"""Attention over key blocks with a running max and sum (flash-style online softmax): the form both MLA
attention forms take when the prompt is longer than one key block.

Why: the unblocked forms hold every score at once, `[B, H, S, T]`: a 32K-token prefill with 2 heads per
rank (DeepSeek-R1 at tp=64) is 8 GiB of fp32 scores per layer, growing with the square of the prompt.
Here the scores exist one `[B, H, S, K]` block at a time (K = `key_block`), so memory grows linearly in S.
The loop is a static Python loop over `ceil(T / K)` blocks whose bounds depend only on shapes: it traces
to one graph (XLA, Neuron) with no data-dependent shape and no host sync.

Visibility may be given factored (`KeyVisibility`: positions and key validity), so that the `[B, S, T]`
mask is never built either: each block builds its `[B, S, K]` slice.

Math, per query row: with block scores s_k (fp32, scaled, hidden entries at the fp32 minimum), running
max m, sum l and weighted sum a:  m' = max(m, max s_k);  l' = l e^(m - m') + sum e^(s_k - m');
a' = a e^(m - m') + e^(s_k - m') V_k;  output a / l. This is softmax(s) V regrouped: in fp32 it differs from
the unblocked form only by rounding (each term's weight takes at most one rescaling per block, each within
2u relative, u = 2^-24, and the sums run in another order). A row with nothing visible stays finite and
gets the mean of the values, as the unblocked form's uniform softmax over fp32-minimum scores gives it.
The weights are cast to the values' dtype for the weighted sum (exact in fp32; in bf16 the unnormalized
weights are rounded instead of the normalized ones) and the running statistics stay fp32.

Shape legend: B batch, S queries, T keys, K key block, b keys in one block (K, or fewer in the last).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Keys per block: a [B, H, S, 1024] fp32 block is 256 MiB at S = 32K, 2 heads; 32 blocks at T = 32K.
KEY_BLOCK = 1024
_FP32_MIN = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class KeyVisibility:
    """Who sees what, factored: key t is visible to query s iff it is valid and its position is not after
    the query's (`key_valid_BT` None: every key valid). `block` builds one key block's `[B, S, b]` mask."""

    query_positions_BS: torch.Tensor
    key_positions_BT: torch.Tensor
    key_valid_BT: torch.Tensor | None = None

    @property
    def num_keys(self) -> int:
        return int(self.key_positions_BT.shape[1])

    def block(self, start: int, stop: int) -> torch.Tensor:
        visible_BSb = self.key_positions_BT[:, None, start:stop] <= self.query_positions_BS[:, :, None]
        if self.key_valid_BT is not None:
            visible_BSb = visible_BSb & self.key_valid_BT[:, None, start:stop]
        return visible_BSb

    def dense(self) -> torch.Tensor:
        """The whole `[B, S, T]` mask (for the unblocked forms)."""
        return self.block(0, self.num_keys)


Visibility = torch.Tensor | KeyVisibility | None


def dense_visibility(visible: Visibility) -> torch.Tensor | None:
    """`[B, S, T]` bool (or None: all visible) from any accepted visibility."""
    return visible.dense() if isinstance(visible, KeyVisibility) else visible


def block_visibility(visible: Visibility, start: int, stop: int) -> torch.Tensor | None:
    """`[B, S, b]` bool for keys `start:stop` (None: all visible)."""
    if isinstance(visible, KeyVisibility):
        return visible.block(start, stop)
    return None if visible is None else visible[..., start:stop]


def is_blocked(num_queries: int, num_keys: int, key_block: int) -> bool:
    """The blocked form runs when the prompt is longer than one key block and so are the keys: otherwise
    the unblocked scores are at most `H * key_block * T` (linear in T) and one block would be the whole."""
    if key_block < 1:
        raise ValueError(f"key_block must be >= 1, got {key_block}")
    return num_queries > key_block and num_keys > key_block


def online_softmax(
    num_keys: int,
    key_block: int,
    block_scores: Callable[[int, int], torch.Tensor],
    block_visible: Callable[[int, int], torch.Tensor | None],
    block_weighted_sum: Callable[[torch.Tensor, int, int], torch.Tensor],
) -> torch.Tensor:
    """`softmax(scores) @ values` block by block, in fp32.

    `block_scores(start, stop)`: fp32 scaled scores `[..., S, b]` of keys `start:stop`; `block_visible`:
    their mask, broadcastable to the scores (None: all visible); `block_weighted_sum(weights, start, stop)`:
    `weights [..., S, b] @ values[start:stop]`, `[..., S, X]`. Returns `[..., S, X]` fp32.
    """
    running_max = running_sum = weighted = None
    for start in range(0, num_keys, key_block):
        stop = min(start + key_block, num_keys)
        scores = block_scores(start, stop)
        visible = block_visible(start, stop)
        if visible is not None:
            scores = scores.masked_fill(~visible, _FP32_MIN)
        block_max = scores.amax(dim=-1, keepdim=True)
        new_max = block_max if running_max is None else torch.maximum(running_max, block_max)
        weights = torch.exp(scores - new_max)
        block_sum = block_weighted_sum(weights, start, stop).to(torch.float32)
        if running_max is None or running_sum is None or weighted is None:
            running_sum, weighted = weights.sum(dim=-1, keepdim=True), block_sum
        else:
            rescale = torch.exp(running_max - new_max)
            running_sum = running_sum * rescale + weights.sum(dim=-1, keepdim=True)
            weighted = weighted * rescale + block_sum
        running_max = new_max
    if weighted is None or running_sum is None:
        raise ValueError("online_softmax needs at least one key")
    return weighted / running_sum

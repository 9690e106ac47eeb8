"""cos/sin for per-row positions, and the rotation in DeepSeek's interleaved layout.

Why per row: in a batch, each row sits at its own positions (decode after prompts of different
lengths, padded prefill). cos/sin are computed from `position_ids_BS` element by element, never from
row 0 (the NxDI contrib port's bug, docs/reference-port.md #1).

Layout: DeepSeek checkpoints rotate adjacent pairs `(x0, x1), (x2, x3), ...` as complex numbers
(official `inference/model.py`). `apply_rotary` does exactly that, on the tensor as it comes out of
`q_b_proj` / `kv_a_proj_with_mqa`. transformers 4.57 (`rope_interleave=True`) instead permutes each
rope vector to `[evens | odds]` and then applies half-split `rotate_half`. Its outputs are therefore
ours permuted by `deinterleave_index(D)`:

    hf_apply_rotary_pos_emb_interleave(x)  ==  apply_rotary(x)[..., deinterleave_index(D)]

Attention scores are identical (q.k is invariant under applying one permutation to both); only
intermediate q/k (and an HF cache's k_rot) differ by that permutation.

Shape legend: B batch, S tokens, H heads, D = qk_rope_head_dim, F = D // 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dsv3_config import ModelConfig
from dsv3_rope.frequencies import rope_inv_freq, yarn_attention_factor


def deinterleave_index(dim: int) -> torch.Tensor:
    """`[0, 2, 4, ..., dim-2, 1, 3, ..., dim-1]`: maps our interleaved layout onto transformers' half-split."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


def rotary_cos_sin(
    inv_freq_F: torch.Tensor, attention_factor: float, position_ids_BS: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 `(cos_BSD, sin_BSD)` for every (row, token) position, each frequency repeated for its pair."""
    if position_ids_BS.dim() != 2 or position_ids_BS.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            "position_ids_BS must be an integer [B, S] tensor, "
            f"got {position_ids_BS.dtype} {tuple(position_ids_BS.shape)}"
        )
    inv_freq_D = torch.repeat_interleave(inv_freq_F.to(torch.float32), 2)
    freqs_BSD = position_ids_BS.to(torch.float32)[..., None] * inv_freq_D
    if attention_factor == 1.0:
        return freqs_BSD.cos(), freqs_BSD.sin()
    return freqs_BSD.cos() * attention_factor, freqs_BSD.sin() * attention_factor


def rotate_pairs(x_D: torch.Tensor) -> torch.Tensor:
    """`(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)`: multiplication by i on each adjacent pair."""
    pairs = x_D.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(x_BSHD: torch.Tensor, cos_BSD: torch.Tensor, sin_BSD: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of `x_BSHD` by the per-(row, token) angles; computed in fp32, returned in x's dtype.

    `cos_BSD` / `sin_BSD` broadcast over the head axis (dim 2), so `x` may hold any number of heads
    (1 for the shared `k_pe`).
    """
    if x_BSHD.dim() != 4 or cos_BSD.dim() != 3 or x_BSHD.shape[-1] != cos_BSD.shape[-1]:
        raise ValueError(f"apply_rotary: x_BSHD {tuple(x_BSHD.shape)} does not match cos_BSD {tuple(cos_BSD.shape)}")
    x32 = x_BSHD.to(torch.float32)
    cos, sin = cos_BSD[:, :, None, :], sin_BSD[:, :, None, :]
    return (x32 * cos + rotate_pairs(x32) * sin).to(x_BSHD.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin for a model's rope width, from its config: YaRN when `rope_scaling` is set, plain otherwise.

    Computed on the fly from `inv_freq` (a non-persistent buffer, so state dicts carry no rope
    tensors); the product `position * inv_freq` is the same single fp32 rounding transformers does, so
    cos/sin match it exactly at any position.

    `inv_freq` is a function of the config, so every conversion (`.to(bfloat16)`, `.to_empty()` after
    building on the meta device) recomputes it in fp32 on the new device instead of rounding it or
    leaving it uninitialized.
    """

    inv_freq_F: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.yarn_policy != "always":
            raise ValueError(
                f"yarn_policy {cfg.yarn_policy!r} is not supported by dsv3-rope: it applies YaRN whenever "
                "rope_scaling is set (transformers' behaviour, yarn_policy 'always')"
            )
        self.cfg = cfg
        self.dim = cfg.qk_rope_head_dim
        self.attention_factor = yarn_attention_factor(cfg.rope_scaling)
        self.register_buffer("inv_freq_F", rope_inv_freq(cfg), persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RotaryEmbedding:
        super()._apply(fn, recurse)
        device = self.inv_freq_F.device
        if device.type != "meta":
            self._buffers["inv_freq_F"] = rope_inv_freq(self.cfg).to(device)
        return self

    def forward(self, position_ids_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 `(cos_BSD, sin_BSD)` for `position_ids_BS` ([B, S] integers, each row its own positions)."""
        return rotary_cos_sin(self.inv_freq_F, self.attention_factor, position_ids_BS)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, attention_factor={self.attention_factor}"

"""The compressed latent cache: per token per layer exactly `kv_lora_rank + qk_rope_head_dim` values
(576 for V3), stored once, preallocated, written in place.

Each entry is `[c_kv | k_pe]`: the latent after `kv_a_layernorm` and the *rotated* shared rope key,
in DeepSeek's interleaved layout. Keeping the two side by side lets the absorbed decode read one
contiguous `[T, C]` block per row for its scores.

Convention (right padding): a token at position `p` lives in slot `p` of its row. A call writes its
tokens at their positions; `seq_lengths_B` says how many leading tokens of each row are real. Padding
tokens leave their slots unchanged (the buffer starts zeroed, so every slot stays finite and a zero
attention weight times it is exactly zero) and do not extend `lengths_B`. A padding token's position
must not repeat a real token's position in the same call (continuing positions, as in right padding,
never do).

Shape legend: L layers, B batch rows, T slots (max_len), S tokens in a call, C = latent_cache_width.
"""

from __future__ import annotations

import torch

from dsv3_config import ModelConfig


class LatentCache:
    """One layer's cache: `buffer_BTC` [B, T, C] and `lengths_B` (valid slots per row, int64)."""

    def __init__(self, buffer_BTC: torch.Tensor, lengths_B: torch.Tensor, kv_lora_rank: int) -> None:
        if buffer_BTC.dim() != 3 or lengths_B.shape != buffer_BTC.shape[:1]:
            raise ValueError(
                f"LatentCache: buffer {tuple(buffer_BTC.shape)} and lengths {tuple(lengths_B.shape)} disagree"
            )
        if not 0 < kv_lora_rank < buffer_BTC.shape[-1]:
            raise ValueError(f"LatentCache: kv_lora_rank {kv_lora_rank} outside the entry width {buffer_BTC.shape[-1]}")
        self.buffer_BTC = buffer_BTC
        self.lengths_B = lengths_B
        self.kv_lora_rank = kv_lora_rank

    @classmethod
    def empty(
        cls, cfg: ModelConfig, batch_size: int, max_len: int, *, dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> LatentCache:
        return cls.empty_layers(cfg, 1, batch_size, max_len, dtype=dtype, device=device)[0]

    @classmethod
    def empty_layers(
        cls,
        cfg: ModelConfig,
        num_layers: int,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> list[LatentCache]:
        """One zeroed [L, B, T, C] allocation, returned as per-layer views."""
        data_LBTC = torch.zeros(num_layers, batch_size, max_len, cfg.latent_cache_width, dtype=dtype, device=device)
        return [
            cls(data_LBTC[i], torch.zeros(batch_size, dtype=torch.int64, device=device), cfg.kv_lora_rank)
            for i in range(num_layers)
        ]

    @property
    def max_len(self) -> int:
        return self.buffer_BTC.shape[1]

    def bytes_per_token(self) -> int:
        return self.buffer_BTC.shape[-1] * self.buffer_BTC.element_size()

    def write(
        self, position_ids_BS: torch.Tensor, entries_BSC: torch.Tensor, seq_lengths_B: torch.Tensor | None = None
    ) -> None:
        """Store `entries_BSC` at slots `position_ids_BS` in place; extend `lengths_B` (in place) by the real tokens.

        `seq_lengths_B` None means every token is real (decode; unpadded prefill). The positions are not
        checked here (a check is a host sync, which breaks a traced step): see `check_positions`.
        """
        batch, seq = position_ids_BS.shape
        if entries_BSC.shape != (batch, seq, self.buffer_BTC.shape[-1]) or batch != self.buffer_BTC.shape[0]:
            raise ValueError(
                f"LatentCache.write: entries {tuple(entries_BSC.shape)} / positions {tuple(position_ids_BS.shape)} "
                f"do not fit the cache {tuple(self.buffer_BTC.shape)}"
            )
        rows_B1 = torch.arange(batch, device=position_ids_BS.device)[:, None]
        entries_BSC = entries_BSC.to(self.buffer_BTC.dtype)
        if seq_lengths_B is None:
            self.buffer_BTC[rows_B1, position_ids_BS] = entries_BSC
            self.lengths_B.copy_(torch.maximum(self.lengths_B, position_ids_BS.amax(dim=1) + 1))
            return
        real_BS = torch.arange(seq, device=position_ids_BS.device)[None, :] < seq_lengths_B[:, None]
        kept_BSC = self.buffer_BTC[rows_B1, position_ids_BS]
        self.buffer_BTC[rows_B1, position_ids_BS] = torch.where(real_BS[..., None], entries_BSC, kept_BSC)
        ends_B = torch.where(real_BS, position_ids_BS + 1, 0).amax(dim=1)
        self.lengths_B.copy_(torch.maximum(self.lengths_B, ends_B))

    def check_positions(self, position_ids_BS: torch.Tensor) -> None:
        """Raise ValueError unless every position has a slot. A host sync: call it once where positions
        enter (eagerly), not inside a traced or compiled step (`write` trusts its positions)."""
        lowest, highest = (int(bound) for bound in torch.aminmax(position_ids_BS))
        if lowest < 0 or highest >= self.max_len:
            raise ValueError(
                f"LatentCache: position_ids_BS span {lowest}..{highest}, outside the cache's 0..{self.max_len - 1}"
            )

    def visibility(self, position_ids_BS: torch.Tensor) -> torch.Tensor:
        """[B, S, T] mask over the whole buffer: slot t is visible to a query iff t <= its position and
        t < its row's length (after this call's write). Static shape, no host sync."""
        limit_BS1 = torch.minimum(position_ids_BS + 1, self.lengths_B[:, None])[..., None]
        return torch.arange(self.max_len, device=position_ids_BS.device) < limit_BS1

    def reset(self) -> None:
        self.buffer_BTC.zero_()
        self.lengths_B.zero_()

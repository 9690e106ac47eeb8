"""`Fp8Module`: the base of the modules that keep a checkpoint's FP8 e4m3 weights and their fp32 block
scales in memory and dequantize them for each product (`--weights fp8-resident`): `Fp8BlockLinear` and
`Fp8GroupedExperts`.

What they share is written once here. Each FP8 weight is a buffer under its checkpoint name with its
scale grid beside it as `NAME_scale_inv`, so a checkpoint's tensors load as stored. Moves (device, meta,
`to_empty`) apply to them like to everything else, but `.to(dtype)` only changes the dtype products run
in (`products_dtype`, the dtype of a zero-size probe buffer the conversion reaches): a dtype conversion
of a stored buffer is undone from the original, not by casting back (an fp32 scale through bf16 would
lose bits).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dsv3_weights.fp8 import FP8_DTYPE


class Fp8Module(nn.Module):
    """Register FP8 weights with `register_fp8`; read the model dtype from `products_dtype`."""

    dtype_probe: torch.Tensor

    def __init__(self, block: tuple[int, int]) -> None:
        super().__init__()
        self.block = block
        self._stored: list[str] = []
        # Zero-size, not saved: `.to(dtype)` converts it, and its dtype is the one products run in.
        self.register_buffer("dtype_probe", torch.empty(0), persistent=False)

    @property
    def products_dtype(self) -> torch.dtype:
        return self.dtype_probe.dtype

    def register_fp8(self, name: str, shape: tuple[int, ...], scale_shape: tuple[int, ...]) -> None:
        """Buffers `name` (FP8 zeros of `shape`) and `name_scale_inv` (fp32 ones of `scale_shape`), both kept
        in their dtype by `.to(dtype)`."""
        self.register_buffer(name, torch.zeros(shape, dtype=FP8_DTYPE))
        self.register_buffer(f"{name}_scale_inv", torch.ones(scale_shape, dtype=torch.float32))
        self._stored += [name, f"{name}_scale_inv"]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Fp8Module:
        """`nn.Module._apply(fn)`, then every stored buffer whose dtype `fn` changed is restored from its
        original, on the device `fn` moved it to."""
        originals = {name: self._buffers[name] for name in self._stored}
        super()._apply(fn, recurse)
        for name, original in originals.items():
            converted = self._buffers[name]
            if original is None or converted is None or converted.dtype == original.dtype:
                continue
            if original.is_meta or converted.is_meta:
                self._buffers[name] = torch.empty(original.shape, dtype=original.dtype, device=converted.device)
            else:
                self._buffers[name] = original.to(device=converted.device)
        return self

"""`Fp8Module`: the base of the modules that keep a checkpoint's FP8 e4m3 weights and their fp32 block
scales in memory and dequantize them for each product (`--weights fp8-resident`): `Fp8BlockLinear` and
`Fp8GroupedExperts`.

What they share is written once here: each FP8 weight is a buffer under its checkpoint name with its scale
grid beside it as `NAME_scale_inv`, so a checkpoint's tensors load as stored, both kept in their dtype by
`.to(dtype)` (`dsv3_model.stored_dtype`, which also says how).
"""

from __future__ import annotations

import torch

from dsv3_model.stored_dtype import StoredDtypeModule
from dsv3_weights.fp8 import FP8_DTYPE


class Fp8Module(StoredDtypeModule):
    """Register FP8 weights with `register_fp8`; read the model dtype from `products_dtype`."""

    def __init__(self, block: tuple[int, int]) -> None:
        super().__init__()
        self.block = block

    def register_fp8(self, name: str, shape: tuple[int, ...], scale_shape: tuple[int, ...]) -> None:
        """Buffers `name` (FP8 zeros of `shape`) and `name_scale_inv` (fp32 ones of `scale_shape`)."""
        self.register_stored(name, torch.zeros(shape, dtype=FP8_DTYPE))
        self.register_stored(f"{name}_scale_inv", torch.ones(scale_shape, dtype=torch.float32))

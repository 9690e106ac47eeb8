"""Modules whose weights stay in the dtype the checkpoint stores them in while their products run in the
model dtype: the base of the FP8-resident modules (`Fp8Module`) and the `lm_head` of an FP8-resident load
(`StoredDtypeLinear`).

Why: a model loaded in fp32 from a BF16 or FP8 checkpoint would otherwise hold every weight widened, two or
four times the bytes of the values it has, and a decode step reads them all (the medium preset's BF16
`lm_head` is 65 MB as stored, 131 MB in fp32). Widening per product gives the same values, since
conversion to a wider float is exact and to a narrower one is the same rounding whenever it happens. A
compiled CPU step fuses the conversion into the product (`dsv3_model.row_products`); eagerly it is one
conversion per call.

Mechanism: each stored tensor is a buffer under its checkpoint name. Moves (device, meta, `to_empty`)
apply to it like to everything else, but `.to(dtype)` only changes the dtype products run in
(`products_dtype`: what the conversion makes of an fp32 tensor): a dtype conversion of a stored buffer is
undone from the original, not by casting back (an fp32 scale through bf16 would lose bits). The dtype is a
plain attribute, not a probe tensor: a compiled step guards a tensor on every call (its dtype, shape,
strides, aliasing), an attribute by one comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class StoredDtypeModule(nn.Module):
    """Register stored tensors with `register_stored`; read the model dtype from `products_dtype`."""

    def __init__(self) -> None:
        super().__init__()
        self._stored: list[str] = []
        self.products_dtype = torch.get_default_dtype()

    def register_stored(self, name: str, initial: torch.Tensor) -> None:
        """Buffer `name`, kept in `initial`'s dtype by `.to(dtype)`."""
        self.register_buffer(name, initial)
        self._stored.append(name)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> StoredDtypeModule:
        """`nn.Module._apply(fn)`, then every stored buffer whose dtype `fn` changed is restored from its
        original, on the device `fn` moved it to."""
        originals = {name: self._buffers[name] for name in self._stored}
        super()._apply(fn, recurse)
        self.products_dtype = fn(torch.empty(0, dtype=self.products_dtype)).dtype
        for name, original in originals.items():
            converted = self._buffers[name]
            if original is None or converted is None or converted.dtype == original.dtype:
                continue
            if original.is_meta or converted.is_meta:
                self._buffers[name] = torch.empty(original.shape, dtype=original.dtype, device=converted.device)
            else:
                self._buffers[name] = original.to(device=converted.device)
        return self


class StoredDtypeLinear(StoredDtypeModule):
    """A bias-free `nn.Linear` whose `weight` [out, in] keeps `stored_dtype`, converted to the model dtype
    for each product."""

    weight: torch.Tensor

    def __init__(self, in_features: int, out_features: int, stored_dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_stored("weight", torch.zeros(out_features, in_features, dtype=stored_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(self.products_dtype))

    def widened(self) -> nn.Linear:
        """The plain `nn.Linear` with the weight converted once to the products dtype: what the eager
        measured kernels start from (`dsv3_model.cpu_kernels`), which a per-call conversion would slow."""
        linear = nn.Linear(self.in_features, self.out_features, bias=False, device="meta")
        linear.weight = nn.Parameter(self.weight.to(self.products_dtype), requires_grad=False)
        return linear

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias=False, "
            f"weight stored in {self.weight.dtype}, products in {self.products_dtype}"
        )

"""The tensors a checkpoint holds, as torch-typed `TensorSpec`s, from the inventory the caller's config
implies (`dsv3_config.inventory.model_tensors`); dsv3-weights itself names no model tensor.

One `TensorSpec` per logical weight: its HF name, shape, stored dtype when not FP8, whether the FP8
release stores it as `float8_e4m3fn` with a `weight_scale_inv`, and whether it belongs to an MTP layer.
make-checkpoint, verify-checkpoint, convert and the model loader all read this one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dsv3_config import ModelConfig
from dsv3_config.inventory import TensorDecl, model_tensors

SCALE_SUFFIX = "_scale_inv"  # `x.weight` -> `x.weight_scale_inv`
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype  # dtype in an unquantized checkpoint of `torch_dtype` bfloat16
    fp8: bool  # stored FP8 with a `weight_scale_inv` in DeepSeek's FP8 release
    mtp: bool  # part of a multi-token-prediction layer

    @property
    def scale_name(self) -> str:
        return self.name + SCALE_SUFFIX


def scale_name(weight_name: str) -> str:
    return weight_name + SCALE_SUFFIX


def tensor_specs(decls: Mapping[str, TensorDecl]) -> dict[str, TensorSpec]:
    """The torch view of inventory declarations (names kept, dtypes as torch dtypes)."""
    return {name: TensorSpec(name, decl.shape, _DTYPES[decl.dtype], decl.fp8, decl.mtp) for name, decl in decls.items()}


def checkpoint_layout(cfg: ModelConfig, *, include_mtp: bool = True) -> dict[str, TensorSpec]:
    """Every logical weight of the checkpoint `cfg` describes, by HF name (scales not listed: see `stored_tensors`)."""
    return tensor_specs(model_tensors(cfg, include_mtp=include_mtp))


def stored_tensors(
    layout: dict[str, TensorSpec], *, quantized_block: tuple[int, int] | None, dense_dtype: torch.dtype = torch.bfloat16
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor stored on disk.

    With `quantized_block`, FP8 weights are `float8_e4m3fn` plus an fp32 `weight_scale_inv` grid;
    without, they are `dense_dtype` (the dtype a conversion wrote). Other tensors keep their spec dtype.
    """
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for spec in layout.values():
        if spec.fp8 and quantized_block is not None:
            grid = (-(-spec.shape[0] // quantized_block[0]), -(-spec.shape[1] // quantized_block[1]))
            out[spec.name] = (spec.shape, torch.float8_e4m3fn)
            out[spec.scale_name] = (grid, torch.float32)
        else:
            out[spec.name] = (spec.shape, dense_dtype if spec.fp8 else spec.dtype)
    return out

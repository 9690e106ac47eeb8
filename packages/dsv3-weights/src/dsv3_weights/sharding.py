"""Layout-driven tensor operations: slice for tensor/expert-parallel ranks, stack per-expert tensors.

Plans are data declared by the layer packages (`dsv3_config.Split`: `dim`, `mesh_axis`, `unit`,
`parts`): dimension `dim` is `parts` equal blocks (gate|up fused: 2), each cut into `size` equal slices
of whole `unit`s, and rank r keeps the r-th slice of every block. For FP8 sources the same slice is
taken from the FP8 weight and its block scale when every cut falls on a block boundary (so the shard
stays quantized); otherwise only the blocks the slice touches are dequantized, then cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dsv3_config import MeshCoordinate, Placement, Split
from dsv3_weights.fp8 import SliceReader, dequantize_fp8_slice


def split_ranges(size: int, split: Split, coord: MeshCoordinate) -> list[tuple[int, int]]:
    """The `[start, end)` ranges of a dimension of `size` that `coord` keeps under `split`."""
    rank, ranks = coord.rank_and_size(split.mesh_axis)
    if size % split.parts:
        raise ValueError(f"dim {split.dim} of size {size} is not {split.parts} equal parts")
    part = size // split.parts
    if part % (split.unit * ranks):
        raise ValueError(
            f"dim {split.dim}: part of size {part} cannot be cut into {ranks} {split.mesh_axis} slices "
            f"of whole units of {split.unit}"
        )
    width = part // ranks
    return [(p * part + rank * width, p * part + (rank + 1) * width) for p in range(split.parts)]


def dim_ranges(shape: Sequence[int], placement: Placement, coord: MeshCoordinate) -> list[list[tuple[int, int]]]:
    """Per dimension, the ranges kept (the whole dimension when no split names it)."""
    ranges: list[list[tuple[int, int]]] = [[(0, size)] for size in shape]
    for split in placement:
        if split.dim >= len(shape):
            raise ValueError(f"split on dim {split.dim} of a {len(shape)}-d tensor {tuple(shape)}")
        if ranges[split.dim] != [(0, shape[split.dim])]:
            raise ValueError(f"placement splits dim {split.dim} twice")
        ranges[split.dim] = split_ranges(shape[split.dim], split, coord)
    return ranges


def shard_tensor(tensor: torch.Tensor, placement: Placement, coord: MeshCoordinate) -> torch.Tensor:
    """The part of `tensor` that rank `coord` holds (a contiguous copy; `tensor` itself if replicated)."""
    out = tensor
    for dim, ranges in enumerate(dim_ranges(tensor.shape, placement, coord)):
        if ranges != [(0, tensor.shape[dim])]:
            out = torch.cat([out.narrow(dim, start, end - start) for start, end in ranges], dim=dim)
    return out.contiguous()


def _aligned(ranges: list[tuple[int, int]], block: int, size: int) -> bool:
    return all(start % block == 0 and (end % block == 0 or end == size) for start, end in ranges)


def shard_fp8_tensor(
    read_weight: SliceReader,
    read_scale: SliceReader,
    shape: tuple[int, int],
    block: tuple[int, int],
    placement: Placement,
    coord: MeshCoordinate,
    out_dtype: torch.dtype = torch.bfloat16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rank `coord`'s part of an FP8 weight read through slice readers (see `fp8.dequantize_fp8_slice`).

    Returns `(fp8 weight, its weight_scale_inv)` when every cut is block-aligned, else
    `(dequantized out_dtype weight, None)` computed from only the blocks touched.
    """
    row_ranges, col_ranges = dim_ranges(shape, placement, coord)
    if _aligned(row_ranges, block[0], shape[0]) and _aligned(col_ranges, block[1], shape[1]):
        weight = _gather(lambda r, c: read_weight((slice(*r), slice(*c))), row_ranges, col_ranges)
        scale_rows = [(s // block[0], -(-e // block[0])) for s, e in row_ranges]
        scale_cols = [(s // block[1], -(-e // block[1])) for s, e in col_ranges]
        return weight, _gather(lambda r, c: read_scale((slice(*r), slice(*c))), scale_rows, scale_cols)
    dense = _gather(
        lambda r, c: dequantize_fp8_slice(read_weight, read_scale, shape, block, slice(*r), slice(*c), out_dtype),
        row_ranges,
        col_ranges,
    )
    return dense, None


def _gather(
    read: Callable[[tuple[int, int], tuple[int, int]], torch.Tensor],
    row_ranges: list[tuple[int, int]],
    col_ranges: list[tuple[int, int]],
) -> torch.Tensor:
    return torch.cat([torch.cat([read(r, c) for c in col_ranges], dim=1) for r in row_ranges], dim=0)


def stack_tensors(
    read: Callable[[str], torch.Tensor], templates: Sequence[str], expert_ids: Sequence[int], concat_dim: int
) -> torch.Tensor:
    """`stack([cat([read(t.format(e=e)) for t in templates], concat_dim) for e in expert_ids])`.

    `concat_dim` is a dimension of each source tensor (gate|up of `[I, H]` weights: 0, giving
    `[E, 2I, H]`). The output is allocated once and filled expert by expert, so memory is the stack
    plus one source tensor.
    """
    if not expert_ids or not templates:
        raise ValueError("stack_tensors needs at least one template and one expert id")
    out: torch.Tensor | None = None
    for i, e in enumerate(expert_ids):
        offset = 0
        for template in templates:
            part = read(template.format(e=e))
            if out is None:
                shape = list(part.shape)
                shape[concat_dim] *= len(templates)
                out = torch.empty((len(expert_ids), *shape), dtype=part.dtype)
            width = part.shape[concat_dim]
            target = out[i].narrow(concat_dim, offset, width)
            if target.shape != part.shape:
                raise ValueError(f"{template.format(e=e)}: shape {tuple(part.shape)} != {tuple(target.shape)}")
            target.copy_(part)
            offset += width
    assert out is not None
    return out

"""Layout-driven slicing for tensor/expert-parallel ranks.

Plans are data (`dsv3_config.Split`: `dim`, `mesh_axis`, `unit`, `parts`, declared in the inventory):
dimension `dim` is `parts` equal blocks (gate|up fused: 2), each cut into `size` equal slices of whole
`unit`s, and rank r keeps the r-th slice of every block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dsv3_config import MeshCoordinate, Placement, Split


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

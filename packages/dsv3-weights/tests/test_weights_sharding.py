"""TP/EP slicing, block-aligned FP8 slicing and expert stacking, against hand-written index arithmetic."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dsv3_config import MeshCoordinate, Split
from dsv3_weights.fp8 import dequantize_fp8_blocks, quantize_fp8_blocks
from dsv3_weights.sharding import shard_fp8_tensor, shard_tensor, split_ranges, stack_tensors


def test_split_keeps_whole_units_of_every_part() -> None:
    # fused gate|up [2 * 12, 5] over tp 2: rank 1 keeps rows 6:12 (gate) and 18:24 (up)
    fused = torch.arange(24 * 5).reshape(24, 5)
    coord = MeshCoordinate(tp_rank=1, tp_size=2)
    got = shard_tensor(fused, (Split(dim=0, mesh_axis="tp", parts=2),), coord)
    assert torch.equal(got, torch.cat([fused[6:12], fused[18:24]]))
    # heads of 3 columns over tp 2: rank 0 keeps heads 0-1 of 4
    assert split_ranges(12, Split(dim=1, mesh_axis="tp", unit=3), MeshCoordinate(tp_rank=0, tp_size=2)) == [(0, 6)]
    # experts over ep and their columns over tp at once
    stacked = torch.arange(4 * 6 * 2).reshape(4, 6, 2)
    coord = MeshCoordinate(tp_rank=1, tp_size=3, ep_rank=1, ep_size=2)
    placement = (Split(dim=0, mesh_axis="ep"), Split(dim=1, mesh_axis="tp"))
    assert torch.equal(shard_tensor(stacked, placement, coord), stacked[2:4, 2:4])
    assert torch.equal(shard_tensor(stacked, (), coord), stacked)


def test_indivisible_split_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be cut into 3 tp slices of whole units of 3"):
        split_ranges(12, Split(dim=0, mesh_axis="tp", unit=3), MeshCoordinate(tp_rank=0, tp_size=3))


def _reader(tensor: torch.Tensor) -> Callable[[tuple[slice, slice]], torch.Tensor]:
    return lambda slices: tensor[slices]


@pytest.mark.parametrize(
    ("placement", "tp_size", "aligned"),
    [
        ((Split(dim=0, mesh_axis="tp", parts=2),), 3, True),  # fused parts of 48 rows, 16 per rank: block-aligned
        ((Split(dim=0, mesh_axis="tp", parts=2),), 2, False),  # 24 rows per rank: cuts inside 16-row blocks
        ((Split(dim=1, mesh_axis="tp"),), 2, False),  # 20 of 40 columns
    ],
)
def test_fp8_shard_is_block_aligned_or_dequantized(placement: tuple[Split, ...], tp_size: int, aligned: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    fp8, scale = quantize_fp8_blocks(torch.randn((96, 40), generator=gen), (16, 16))
    full = dequantize_fp8_blocks(fp8, scale, (16, 16), torch.float32)
    for rank in range(tp_size):
        coord = MeshCoordinate(tp_rank=rank, tp_size=tp_size)
        weight, weight_scale = shard_fp8_tensor(
            _reader(fp8), _reader(scale), (96, 40), (16, 16), placement, coord, torch.float32
        )
        expected = shard_tensor(full, placement, coord)
        if aligned:
            assert weight.dtype == torch.float8_e4m3fn
            assert weight_scale is not None
            assert torch.equal(weight.view(torch.uint8), shard_tensor(fp8.view(torch.uint8), placement, coord))
            weight = dequantize_fp8_blocks(weight, weight_scale, (16, 16), torch.float32)
        else:
            assert weight_scale is None
        torch.testing.assert_close(weight, expected, rtol=0, atol=0)  # same fp32 products, exact


def test_stack_tensors_fuses_gate_up_per_expert() -> None:
    tensors = {f"e.{e}.{p}": torch.full((3, 4), float(10 * e + i)) for e in range(4) for i, p in enumerate("gu")}
    got = stack_tensors(tensors.__getitem__, ["e.{e}.g", "e.{e}.u"], [1, 3], concat_dim=0)
    expected = torch.stack([torch.cat([tensors[f"e.{e}.g"], tensors[f"e.{e}.u"]]) for e in (1, 3)])
    assert got.shape == (2, 6, 4)
    assert torch.equal(got, expected)
    down = stack_tensors(tensors.__getitem__, ["e.{e}.u"], range(4), concat_dim=1)
    assert torch.equal(down, torch.stack([tensors[f"e.{e}.u"] for e in range(4)]))



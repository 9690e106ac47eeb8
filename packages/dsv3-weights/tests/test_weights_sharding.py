"""TP/EP slicing against hand-written index arithmetic."""

from __future__ import annotations

import pytest
import torch

from dsv3_config import MeshCoordinate, Split
from dsv3_weights.sharding import shard_tensor, split_ranges


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

"""Data offsets in a safetensors header: refused exactly where the `safetensors` library refuses them.

The reference is `safetensors.safe_open` (the format's own implementation): each layout below is
written by hand (two 16-byte fp32 tensors `a` and `b`, and sometimes a zero-size `z`) and opened by
both; they must agree, and the expected verdict is written down too, so a change in the library shows.
Accepted layouts must read the same values through both.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open

from dsv3_weights import CheckpointError
from dsv3_weights.safetensors_io import read_header

DATA = bytes(range(48))  # 12 fp32 values' worth of distinct bytes

# name: (offsets per tensor, data section length, accepted)
LAYOUTS: dict[str, tuple[dict[str, tuple[int, int]], int, bool]] = {
    "packed in order": ({"a": (0, 16), "b": (16, 32)}, 32, True),
    "packed, listed in reverse": ({"a": (16, 32), "b": (0, 16)}, 32, True),
    "zero-size tensor at the end": ({"a": (0, 16), "b": (16, 32), "z": (32, 32)}, 32, True),
    "same bytes twice (overlap)": ({"a": (0, 16), "b": (0, 16)}, 16, False),
    "partial overlap": ({"a": (0, 16), "b": (8, 24)}, 24, False),
    "zero-size tensor inside another": ({"a": (0, 16), "b": (16, 32), "z": (8, 8)}, 32, False),
    "gap between tensors": ({"a": (0, 16), "b": (24, 40)}, 40, False),
    "gap at the start": ({"a": (8, 24), "b": (24, 40)}, 40, False),
    "bytes after the last tensor": ({"a": (0, 16), "b": (16, 32)}, 40, False),
    "past the end of the file": ({"a": (0, 16), "b": (16, 32)}, 24, False),
}


def _write(path: Path, offsets: dict[str, tuple[int, int]], data_len: int) -> None:
    header = {
        name: {"dtype": "F32", "shape": [(end - begin) // 4], "data_offsets": [begin, end]}
        for name, (begin, end) in offsets.items()
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + DATA[:data_len])


def _safetensors_reads(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError:
        return None


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_offsets_are_refused_where_safetensors_refuses_them(layout: str, tmp_path: Path) -> None:
    offsets, data_len, accepted = LAYOUTS[layout]
    path = tmp_path / "model.safetensors"
    _write(path, offsets, data_len)
    reference = _safetensors_reads(path)
    assert (reference is not None) == accepted, "the safetensors library's verdict changed"
    if not accepted:
        with pytest.raises(CheckpointError, match=rf"^{path}: .*(overlaps|unused bytes|bytes after|truncated)"):
            read_header(path)
        return
    entries = read_header(path)
    assert reference is not None
    assert set(entries) == set(reference)
    with path.open("rb") as f:
        for name, entry in entries.items():
            f.seek(entry.begin)
            values = struct.unpack(f"<{(entry.end - entry.begin) // 4}f", f.read(entry.end - entry.begin))
            assert torch.equal(torch.tensor(values, dtype=torch.float32), reference[name]), name

"""`CheckpointReader` against safetensors' own loader, and its errors on damaged checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsv3_weights import CheckpointError, CheckpointReader
from dsv3_weights.reader import INDEX_NAME


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def test_reader_matches_safetensors_load_file(tiny_fp8_dir: Path) -> None:
    reader = CheckpointReader(tiny_fp8_dir)
    seen = set()
    for path in reader.files():
        for name, tensor in load_file(path).items():
            assert reader.file_of(name) == path
            assert reader.shape(name) == tuple(tensor.shape)
            assert reader.dtype(name) == tensor.dtype
            assert torch.equal(_bits(reader.get(name)), _bits(tensor))
            seen.add(name)
    assert seen == set(reader.keys())


def test_get_slice_reads_rows_and_columns(tmp_path: Path) -> None:
    tensor = torch.arange(7 * 9 * 2, dtype=torch.float32).reshape(7, 9, 2)
    save_file({"x": tensor, "s": torch.tensor(3.0)}, tmp_path / "model.safetensors")
    reader = CheckpointReader(tmp_path)  # single-file layout, no index
    assert torch.equal(reader.get_slice("x", (slice(2, 5), slice(1, 8), slice(1, 2))), tensor[2:5, 1:8, 1:2])
    assert torch.equal(reader.get_slice("x", (slice(4, None),)), tensor[4:])
    assert torch.equal(reader.get_rows("x", 6, 7), tensor[6:7])
    assert reader.get("s").item() == 3.0
    with pytest.raises(IndexError, match="rows 5:9 outside 0:7"):
        reader.get_rows("x", 5, 9)


def test_missing_tensor_names_it(tiny_fp8_dir: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no tensor 'model\.nope\.weight'"):
        CheckpointReader(tiny_fp8_dir).get("model.nope.weight")


def test_truncated_file_names_file_and_tensor(tiny_fp8_copy: Path) -> None:
    shard = sorted(tiny_fp8_copy.glob("*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=rf"{shard.name}: truncated file: tensor '[^']+' ends at byte"):
        CheckpointReader(tiny_fp8_copy)


def test_truncated_header_names_file(tiny_fp8_copy: Path) -> None:
    shard = sorted(tiny_fp8_copy.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=rf"{shard.name}: corrupt or truncated safetensors header"):
        CheckpointReader(tiny_fp8_copy)


def test_corrupt_header_names_file(tiny_fp8_copy: Path) -> None:
    shard = sorted(tiny_fp8_copy.glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[8:12] = b"\xff\xfe{]"
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{shard.name}: corrupt safetensors header \(not JSON"):
        CheckpointReader(tiny_fp8_copy)


def test_shard_missing_from_disk_names_shard_and_tensor(tiny_fp8_copy: Path) -> None:
    shard = sorted(tiny_fp8_copy.glob("*.safetensors"))[2]
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"{shard.name}: shard listed in .* \(e.g. for tensor 'model\."):
        CheckpointReader(tiny_fp8_copy)


def test_index_and_files_must_agree(tiny_fp8_copy: Path) -> None:
    index_path = tiny_fp8_copy / INDEX_NAME
    index = json.loads(index_path.read_text())
    name = "model.norm.weight"
    real = index["weight_map"][name]
    other = next(f for f in sorted(set(index["weight_map"].values())) if f != real)
    index["weight_map"][name] = other
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"{real}: holds tensor '{name}', which the index places in {other}"):
        CheckpointReader(tiny_fp8_copy)

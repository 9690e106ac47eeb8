"""The safetensors file format, read and written in pieces so memory never holds a whole file.

Why not `safetensors.safe_open`: it memory-maps the file, and every page a read touches stays in the
process's resident set until the file is closed (measured: reading a 768 MB shard tensor by tensor
through `get_slice` raised RSS from 230 MB to 1001 MB). Real shards are 4-5 GB, so a converter built on it
cannot keep peak RSS bounded. Here the header is parsed and validated once, and tensor bytes are read
with `pread` into buffers the caller owns; output is written tensor chunk by tensor chunk with a
header computed up front. The format is the published one (8-byte little-endian header length, JSON
header, packed data), byte-compatible with `safetensors.torch.save_file` / `load_file`.
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsv3_weights.errors import CheckpointError

DTYPE_FROM_NAME: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAME_FROM_DTYPE: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPE_FROM_NAME.items()}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie in its file (absolute offsets)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one index along dim 0 (the whole tensor for a scalar)."""
        return (self.end - self.begin) // self.shape[0] if self.shape and self.shape[0] else self.end - self.begin


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate a safetensors header: sizes, dtypes, offsets tiling the file's data section."""
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({file_size} bytes, no header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
                raise CheckpointError(
                    f"{path}: corrupt or truncated safetensors header (declares {header_len} header bytes, "
                    f"file has {file_size})"
                )
            raw = f.read(header_len)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read safetensors file: {err}") from err
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt safetensors header (not JSON: {err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    return _entries(path, header, data_start=8 + header_len, file_size=file_size)


def _entries(path: Path, header: dict[str, Any], data_start: int, file_size: int) -> dict[str, TensorEntry]:
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPE_FROM_NAME[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r}: {info!r}") from err
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected or begin < 0:
            raise CheckpointError(
                f"{path}: tensor {name!r} spans {end - begin} bytes, but {info['dtype']} {list(shape)} needs {expected}"
            )
        if data_start + end > file_size:
            raise CheckpointError(
                f"{path}: truncated file: tensor {name!r} ends at byte {data_start + end}, file has {file_size}"
            )
        entries[name] = TensorEntry(name, dtype, shape, data_start + begin, data_start + end)
    _check_tiling(path, entries, data_start, file_size)
    return entries


def _check_tiling(path: Path, entries: dict[str, TensorEntry], data_start: int, file_size: int) -> None:
    """The tensors' byte ranges must tile the data section exactly, in some order, as the `safetensors`
    library requires (its `Metadata::validate` sorts by offsets and demands each begin where the last
    ended, from 0 to the end of the file): an overlap would let one tensor read another's bytes (an
    expert silently a copy of another), a gap or trailing bytes mean the header and data disagree."""
    position, previous = data_start, None
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin < position:
            raise CheckpointError(
                f"{path}: tensor {entry.name!r} (bytes {entry.begin - data_start}..{entry.end - data_start} of the "
                f"data section) overlaps tensor {previous!r}, which ends at {position - data_start}"
            )
        if entry.begin > position:
            after = f"after tensor {previous!r}" if previous else "at the start of the data section"
            raise CheckpointError(
                f"{path}: {entry.begin - position} unused bytes {after}, before tensor {entry.name!r} "
                "(data offsets do not tile the data section)"
            )
        position, previous = entry.end, entry.name
    if position != file_size:
        raise CheckpointError(
            f"{path}: {file_size - position} bytes after the last tensor's data ({previous!r}): the header's "
            "data offsets do not cover the file"
        )


def byte_view(tensor: torch.Tensor) -> ctypes.Array[ctypes.c_ubyte]:
    """A zero-copy writable byte view of a contiguous CPU tensor (keep the tensor alive while used)."""
    nbytes = tensor.numel() * tensor.element_size()
    return (ctypes.c_ubyte * nbytes).from_address(tensor.data_ptr())


def read_rows(f: io.BufferedReader, entry: TensorEntry, row_start: int, row_end: int) -> torch.Tensor:
    """Rows `row_start:row_end` (dim 0) of a tensor, read from disk into a fresh tensor."""
    rows_shape: tuple[int, ...]
    if not entry.shape:
        row_start, row_end, rows_shape = 0, 1, ()
    else:
        rows_shape = (row_end - row_start, *entry.shape[1:])
    out = torch.empty(rows_shape, dtype=entry.dtype)
    nbytes = (row_end - row_start) * entry.row_bytes
    if nbytes == 0:
        return out
    f.seek(entry.begin + row_start * entry.row_bytes)
    got = f.readinto(byte_view(out))
    if got != nbytes:
        raise CheckpointError(f"{getattr(f, 'name', '?')}: tensor {entry.name!r}: short read ({got} of {nbytes} bytes)")
    return out


def header_bytes(tensors: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]) -> bytes:
    """The 8-byte length plus JSON header (space-padded to 8 bytes) for tensors stored in this order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": NAME_FROM_DTYPE[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def fsync_replace(tmp: Path, final: Path) -> None:
    """Make `tmp` durable, then atomically give it its final name."""
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)

"""`CheckpointReader`: lazy, bounded-memory access to a Hugging Face checkpoint directory.

A directory holds `model.safetensors.index.json` (tensor name -> shard file) or one `model.safetensors`.
Opening parses every shard's header (cheap) and checks the index against the files, so a shard missing
from disk, a truncated file, a corrupt header or a tensor the index places in the wrong file fails at
once with an error naming the file and tensor. Tensor bytes are read only when asked for, and only the
rows asked for (see `safetensors_io` for why this does not memory-map).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import torch

from dsv3_config import ModelConfig, load_config
from dsv3_weights.errors import CheckpointError
from dsv3_weights.safetensors_io import TensorEntry, read_header, read_rows

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def read_index(directory: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from the index or the single-file layout."""
    if not directory.exists():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (a checkpoint is a directory: config.json, safetensors)")
    index_path = directory / INDEX_NAME
    if index_path.exists():
        try:
            index = json.loads(index_path.read_bytes())
            weight_map = index["weight_map"]
        except OSError as err:
            raise CheckpointError(f"{index_path}: cannot read the index: {err}") from err
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index_path}: not a safetensors index (no readable weight_map): {err}") from err
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index_path}: weight_map must map tensor names to file names")
        return dict(weight_map)
    single = directory / SINGLE_NAME
    if single.exists():
        return {name: SINGLE_NAME for name in read_header(single)}
    raise CheckpointError(f"{directory}: neither {INDEX_NAME} nor {SINGLE_NAME} found")


class CheckpointReader:
    """Read tensors, or row/column slices of them, from a checkpoint directory on demand."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._weight_map = read_index(self.directory)
        self._entries: dict[str, TensorEntry] = {}
        for file_name in sorted(set(self._weight_map.values())):
            self._load_shard(file_name)
        unplaced = sorted(set(self._weight_map) - set(self._entries))
        if unplaced:
            name = unplaced[0]
            raise CheckpointError(
                f"{self.directory / self._weight_map[name]}: index places tensor {name!r} in this file but it is "
                f"not there ({len(unplaced)} such tensors)"
            )
        self._files: dict[str, io.BufferedReader] = {}

    def _load_shard(self, file_name: str) -> None:
        path = self.directory / file_name
        if not path.exists():
            first = next(name for name, f in self._weight_map.items() if f == file_name)
            raise CheckpointError(f"{path}: shard listed in {INDEX_NAME} (e.g. for tensor {first!r}) does not exist")
        for name, entry in read_header(path).items():
            placed = self._weight_map.get(name)
            if placed != file_name:
                raise CheckpointError(
                    f"{path}: holds tensor {name!r}, which the index "
                    + ("does not list" if placed is None else f"places in {placed}")
                )
            self._entries[name] = entry

    # ---- metadata ------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return list(self._weight_map)

    def __iter__(self) -> Iterator[str]:
        return iter(self._weight_map)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> TensorEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self.directory}: checkpoint has no tensor {name!r}") from None

    def file_of(self, name: str) -> Path:
        self.entry(name)
        return self.directory / self._weight_map[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entry(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self.entry(name).dtype

    def nbytes(self, name: str) -> int:
        entry = self.entry(name)
        return entry.end - entry.begin

    def files(self) -> list[Path]:
        return [self.directory / f for f in sorted(set(self._weight_map.values()))]

    def config(self) -> ModelConfig:
        """The directory's `config.json` (a file that is not JSON is a `CheckpointError` naming it)."""
        path = self.directory / "config.json"
        try:
            return load_config(path)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: not valid JSON ({err})") from err

    # ---- data ----------------------------------------------------------------------------

    def _file(self, name: str) -> io.BufferedReader:
        file_name = self._weight_map[name]
        if file_name not in self._files:
            self._files[file_name] = (self.directory / file_name).open("rb")
        return self._files[file_name]

    def get_rows(self, name: str, row_start: int, row_end: int) -> torch.Tensor:
        """Rows `row_start:row_end` of dim 0, reading only their bytes."""
        entry = self.entry(name)
        rows = entry.shape[0] if entry.shape else 1
        if not 0 <= row_start <= row_end <= rows:
            raise IndexError(f"{name}: rows {row_start}:{row_end} outside 0:{rows}")
        return read_rows(self._file(name), entry, row_start, row_end)

    def get(self, name: str) -> torch.Tensor:
        entry = self.entry(name)
        return self.get_rows(name, 0, entry.shape[0] if entry.shape else 1)

    def get_slice(self, name: str, slices: tuple[slice, ...]) -> torch.Tensor:
        """`tensor[slices]` (unit-step slices), reading only the rows the first slice selects."""
        entry = self.entry(name)
        if not entry.shape:
            raise IndexError(f"{name}: cannot slice a scalar")
        if len(slices) > len(entry.shape) or any(s.step not in (None, 1) for s in slices):
            raise IndexError(f"{name}: need at most {len(entry.shape)} unit-step slices, got {slices}")
        row_start, row_end, _ = slices[0].indices(entry.shape[0]) if slices else (0, entry.shape[0], 1)
        rows = self.get_rows(name, row_start, max(row_start, row_end))
        return rows[(slice(None), *slices[1:])].contiguous() if len(slices) > 1 else rows

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

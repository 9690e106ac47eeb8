"""Damaged checkpoints, as data: each kind damages a copy of a sound tiny FP8 checkpoint in one way.

`KINDS` maps a kind's name to `damage(directory) -> what the error must name` (a file name, a tensor
name, or, when the damage is a wrong path, that absolute path, which the commands are then given
instead of the directory). The damage is done on the bytes or the header JSON directly (not through
dsv3-weights), so what is tested is not also what built the case. The tiny preset: 3 layers (layer 0
dense), 16 experts of `moe_intermediate_size` 48, hidden 64, FP8 blocks of 32 x 32, one MTP layer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

INDEX = "model.safetensors.index.json"
WEIGHT = "model.layers.1.mlp.experts.5.gate_proj.weight"  # FP8 [48, 64], scale [2, 2]
SCALE = WEIGHT + "_scale_inv"
NEIGHBOUR = "model.layers.1.mlp.experts.6.gate_proj.weight"  # same shape, same file
NORM = "model.norm.weight"  # bf16 [64]

Damage = Callable[[Path], str]


def _index(directory: Path) -> dict[str, Any]:
    return json.loads((directory / INDEX).read_text())


def file_of(directory: Path, name: str) -> Path:
    return directory / _index(directory)["weight_map"][name]


def _read(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _write(path: Path, header: dict[str, Any], data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _edit_header(name: str, edit: Callable[[dict[str, Any]], None]) -> Damage:
    """Change one tensor's header entry in place (its bytes stay where they are)."""

    def damage(directory: Path) -> str:
        path = file_of(directory, name)
        header, data = _read(path)
        edit(header[name])
        _write(path, header, data)
        return name

    return damage


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda entry: entry.__setitem__(key, value)


def _edit_values(name: str, edit: Callable[[torch.Tensor], None]) -> Damage:
    """Change one tensor's values (through safetensors' own writer)."""

    def damage(directory: Path) -> str:
        path = file_of(directory, name)
        tensors = load_file(path)
        edit(tensors[name])
        save_file(tensors, path, metadata={"format": "pt"})
        return name

    return damage


def _poke_byte(name: str, value: int) -> Damage:
    """Overwrite the first data byte of `name` (an FP8 0x7F is e4m3fn's NaN)."""

    def damage(directory: Path) -> str:
        path = file_of(directory, name)
        header, data = _read(path)
        begin = header[name]["data_offsets"][0]
        _write(path, header, data[:begin] + bytes([value]) + data[begin + 1 :])
        return name

    return damage


def _replace_tensor(name: str, tensor: torch.Tensor | None, new_name: str | None = None) -> Damage:
    """Drop `name` (tensor None), replace it, or add `new_name` next to it; the index follows."""

    def damage(directory: Path) -> str:
        path = file_of(directory, name)
        tensors = load_file(path)
        index = _index(directory)
        if new_name is not None:
            tensors[new_name] = tensor  # type: ignore[assignment]
            index["weight_map"][new_name] = path.name
        elif tensor is None:
            del tensors[name]
            del index["weight_map"][name]
        else:
            tensors[name] = tensor
        save_file(tensors, path, metadata={"format": "pt"})
        (directory / INDEX).write_text(json.dumps(index))
        return new_name or name

    return damage


def _truncate(size: Callable[[int], int]) -> Damage:
    def damage(directory: Path) -> str:
        path = file_of(directory, WEIGHT)
        raw = path.read_bytes()
        path.write_bytes(raw[: size(len(raw))])
        return path.name

    return damage


def _header_length(directory: Path) -> str:
    path = file_of(directory, WEIGHT)
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])
    return path.name


def _header_json(directory: Path) -> str:
    path = file_of(directory, WEIGHT)
    raw = bytearray(path.read_bytes())
    raw[8:16] = b"{oops!!!"
    path.write_bytes(bytes(raw))
    return path.name


def _overlap(directory: Path) -> str:
    """The neighbour expert's header points at expert 5's bytes: it would silently become a copy."""
    path = file_of(directory, NEIGHBOUR)
    header, data = _read(path)
    header[NEIGHBOUR]["data_offsets"] = header[WEIGHT]["data_offsets"]
    _write(path, header, data)
    return path.name


def _trailing_bytes(directory: Path) -> str:
    path = file_of(directory, WEIGHT)
    path.write_bytes(path.read_bytes() + b"\0" * 64)
    return path.name


def _past_end(directory: Path) -> str:
    path = file_of(directory, WEIGHT)
    header, data = _read(path)
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    begin, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [begin + 64, end + 64]
    _write(path, header, data)
    return path.name


def _missing_shard(directory: Path) -> str:
    path = file_of(directory, WEIGHT)
    path.unlink()
    return path.name


def _index_names_missing_file(directory: Path) -> str:
    index = _index(directory)
    index["weight_map"][WEIGHT] = "model-00009-of-00009.safetensors"
    (directory / INDEX).write_text(json.dumps(index))
    return "model-00009-of-00009.safetensors"


def _index_wrong_file(directory: Path) -> str:
    index = _index(directory)
    others = sorted(set(index["weight_map"].values()) - {index["weight_map"][WEIGHT]})
    index["weight_map"][WEIGHT] = others[0]
    (directory / INDEX).write_text(json.dumps(index))
    return WEIGHT


def _write_text(name: str, text: str) -> Damage:
    def damage(directory: Path) -> str:
        (directory / name).write_text(text)
        return name

    return damage


def _remove(name: str) -> Damage:
    def damage(directory: Path) -> str:
        (directory / name).unlink()
        return name

    return damage


def _config_edit(key: str, value: Any, named: str) -> Damage:
    """A valid config that does not describe the tensors (the error names the first tensor it contradicts)."""

    def damage(directory: Path) -> str:
        cfg = json.loads((directory / "config.json").read_text())
        cfg[key] = value
        (directory / "config.json").write_text(json.dumps(cfg))
        return named

    return damage


def _a_file(directory: Path) -> str:
    """The checkpoint path is a file (a safetensors shard passed instead of its directory)."""
    return str(file_of(directory, WEIGHT))


def _missing_directory(directory: Path) -> str:
    return str(directory / "no-such-checkpoint")


def _nan(tensor: torch.Tensor) -> None:
    tensor[1, 0] = float("nan")


def _inf(tensor: torch.Tensor) -> None:
    tensor[0, 1] = float("inf")


def _inf_norm(tensor: torch.Tensor) -> None:
    tensor[3] = float("-inf")


KINDS: dict[str, Damage] = {
    "truncated file": _truncate(lambda size: size - 100),
    "zero-byte file": _truncate(lambda size: 0),
    "header length wrong": _header_length,
    "bad header JSON": _header_json,
    "wrong FP8 dtype (e5m2)": _edit_header(WEIGHT, _set("dtype", "F8_E5M2")),
    "wrong dtype (int8)": _edit_header(WEIGHT, _set("dtype", "I8")),
    "wrong shape": _edit_header(WEIGHT, _set("shape", [24, 128])),
    "transposed weight": _edit_header(WEIGHT, _set("shape", [64, 48])),
    "wrong scale shape": _edit_header(SCALE, _set("shape", [4, 1])),
    "zero-shape scale": _replace_tensor(SCALE, torch.empty(0, 2)),
    "NaN scale": _edit_values(SCALE, _nan),
    "inf scale": _edit_values(SCALE, _inf),
    "NaN in FP8 weight data": _poke_byte(WEIGHT, 0x7F),
    "inf in bf16 data": _edit_values(NORM, _inf_norm),
    "missing tensor": _replace_tensor(WEIGHT, None),
    "missing scale": _replace_tensor(SCALE, None),
    "extra tensor": _replace_tensor(WEIGHT, torch.zeros(4), "model.layers.1.mlp.experts.5.bogus.weight"),
    "overlapping offsets": _overlap,
    "bytes after the last tensor": _trailing_bytes,
    "offsets past the end": _past_end,
    "shard file missing": _missing_shard,
    "index naming a missing file": _index_names_missing_file,
    "index placing a tensor in the wrong file": _index_wrong_file,
    "malformed index": _write_text(INDEX, '{"weight_map": {"a": '),
    "index without weight_map": _write_text(INDEX, '{"metadata": {}}'),
    "config missing": _remove("config.json"),
    "config invalid JSON": _write_text("config.json", '{"model_type": "deepseek_v3", '),
    "config with fewer experts": _config_edit("n_routed_experts", 8, "model.layers.1.mlp.gate.weight"),
    "path is a file": _a_file,
    "missing directory": _missing_directory,
}

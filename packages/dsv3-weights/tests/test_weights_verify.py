"""Synthetic checkpoints are what the layout says, deterministic, and verify-checkpoint catches damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsv3_config import load_config, preset
from dsv3_weights import CheckpointError, CheckpointReader, check_checkpoint, make_checkpoint, verify_checkpoint
from dsv3_weights.fp8 import FP8_MAX
from dsv3_weights.layout import checkpoint_layout, stored_tensors
from dsv3_weights.reader import INDEX_NAME


def test_synthetic_fp8_checkpoint_has_the_published_layout(tiny_fp8_dir: Path) -> None:
    cfg = preset("tiny")
    reader = CheckpointReader(tiny_fp8_dir)
    stored = stored_tensors(checkpoint_layout(cfg), quantized_block=(32, 32))
    assert {n: (reader.shape(n), reader.dtype(n)) for n in reader} == stored
    assert len(reader.files()) > 3
    assert load_config(tiny_fp8_dir) == cfg  # config.json round-trips, quantization_config included
    # Scales are amax / 448 of each block: the dequantized block's largest magnitude is exactly 448 * scale.
    name = "model.layers.1.mlp.experts.3.down_proj.weight"
    weight, scale = reader.get(name).float(), reader.get(name + "_scale_inv")
    assert weight[:32, :32].abs().max() == FP8_MAX
    assert scale.shape == (2, 2)
    assert bool((scale > 0).all())
    assert verify_checkpoint(tiny_fp8_dir) == []


def test_synthetic_is_deterministic_per_seed(tiny_fp8_dir: Path, tmp_path: Path) -> None:
    again = make_checkpoint(tmp_path / "a", preset("tiny"), fp8=True, seed=0, max_shard_bytes=64 * 1024, progress=False)
    for path in sorted(tiny_fp8_dir.glob("*.safetensors")):
        assert path.read_bytes() == (again / path.name).read_bytes()
    other = make_checkpoint(tmp_path / "b", preset("tiny"), fp8=True, seed=1, max_shard_bytes=1 << 30, progress=False)
    name = "model.layers.0.mlp.up_proj.weight"
    a, b = CheckpointReader(again).get(name), CheckpointReader(other).get(name)
    assert not torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_unquantized_synthetic_has_no_scales(tmp_path: Path) -> None:
    cfg = preset("tiny")
    dst = make_checkpoint(tmp_path / "bf16", cfg, fp8=False, seed=0, progress=False)
    raw = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in raw
    reader = CheckpointReader(dst)
    assert not any(n.endswith("_scale_inv") for n in reader)
    assert reader.dtype("model.layers.0.self_attn.o_proj.weight") == torch.bfloat16
    assert verify_checkpoint(dst) == []


def _rewrite(path: Path, edit: dict[str, torch.Tensor | None]) -> None:
    tensors = load_file(path)
    for name, tensor in edit.items():
        if tensor is None:
            del tensors[name]
        else:
            tensors[name] = tensor
    save_file(tensors, path, metadata={"format": "pt"})


def _shard_of(directory: Path, name: str) -> Path:
    return directory / json.loads((directory / INDEX_NAME).read_text())["weight_map"][name]


def test_verify_reports_each_kind_of_damage(tiny_fp8_copy: Path) -> None:
    d = tiny_fp8_copy
    index = json.loads((d / INDEX_NAME).read_text())
    wrong_shape, wrong_dtype = "model.layers.0.input_layernorm.weight", "model.norm.weight"
    missing_scale = "model.layers.1.self_attn.o_proj.weight_scale_inv"
    nan_scale = "model.layers.2.self_attn.q_b_proj.weight_scale_inv"
    _rewrite(_shard_of(d, wrong_shape), {wrong_shape: torch.ones(3, dtype=torch.bfloat16)})
    _rewrite(_shard_of(d, wrong_dtype), {wrong_dtype: torch.ones(64, dtype=torch.int32)})
    _rewrite(_shard_of(d, missing_scale), {missing_scale: None})
    del index["weight_map"][missing_scale]
    bad = load_file(_shard_of(d, nan_scale))[nan_scale]
    bad[0, 0] = float("nan")
    _rewrite(_shard_of(d, nan_scale), {nan_scale: bad, "model.extra.weight": torch.zeros(2)})
    index["weight_map"]["model.extra.weight"] = _shard_of(d, nan_scale).name
    (d / INDEX_NAME).write_text(json.dumps(index))
    problems = verify_checkpoint(d)
    text = "\n".join(problems)
    assert f"'{wrong_shape}' has shape [3], config implies [64]" in text
    assert f"'{wrong_dtype}' has dtype torch.int32, expected " in text
    assert f"missing FP8 weight scale '{missing_scale}'" in text
    assert f"{_shard_of(d, nan_scale).name}: tensor '{nan_scale}' has 1 NaN/Inf values" in text
    assert "unknown tensor 'model.extra.weight'" in text
    assert len(problems) == 5
    with pytest.raises(CheckpointError, match="5 problems"):
        check_checkpoint(d)


def test_verify_reports_unreadable_checkpoint_and_stray_shard(tiny_fp8_copy: Path) -> None:
    save_file({"x": torch.zeros(1)}, tiny_fp8_copy / "stray.safetensors")
    assert verify_checkpoint(tiny_fp8_copy) == [
        f"{tiny_fp8_copy / 'stray.safetensors'}: shard not referenced by {INDEX_NAME}"
    ]
    sorted(tiny_fp8_copy.glob("model-*.safetensors"))[0].unlink()
    (problem,) = verify_checkpoint(tiny_fp8_copy)
    assert "shard listed in model.safetensors.index.json" in problem

"""`convert_checkpoint`: values equal the per-block definition, transformers loads the result, errors leave
nothing that claims to be complete, and a rerun redoes only what is not verifiably finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsv3_config import load_config, preset
from dsv3_weights import MANIFEST_NAME, CheckpointError, CheckpointReader, convert_checkpoint, verify_checkpoint
from dsv3_weights.reader import INDEX_NAME

SHARD = 96 * 1024


def loop_dequantize(weight: torch.Tensor, scale: torch.Tensor, block: int) -> torch.Tensor:
    out = torch.empty(weight.shape, dtype=torch.float32)
    for bi in range(scale.shape[0]):
        for bj in range(scale.shape[1]):
            rows, cols = slice(bi * block, (bi + 1) * block), slice(bj * block, (bj + 1) * block)
            out[rows, cols] = weight[rows, cols].float() * scale[bi, bj]
    return out


@pytest.fixture(scope="module")
def converted(tiny_fp8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "bf16"
    convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)
    return dst


def test_converted_values_equal_the_block_definition(tiny_fp8_dir: Path, converted: Path) -> None:
    src, out = CheckpointReader(tiny_fp8_dir), CheckpointReader(converted)
    assert set(out.keys()) == {n for n in src if not n.endswith("_scale_inv")}
    for name in out:
        if name + "_scale_inv" in src:
            expected = loop_dequantize(src.get(name), src.get(name + "_scale_inv"), 32).bfloat16()
            assert out.dtype(name) == torch.bfloat16
            torch.testing.assert_close(out.get(name), expected, rtol=0, atol=0)  # fp32 product, one cast: exact
        else:
            assert out.dtype(name) == src.dtype(name)
            assert torch.equal(out.get(name), src.get(name))
    cfg = load_config(converted)
    assert cfg.quantization_config is None
    assert cfg.torch_dtype == "bfloat16"
    assert cfg == preset("tiny").replace(quantization_config=None)
    assert verify_checkpoint(converted) == []


def test_transformers_loads_the_converted_checkpoint(converted: Path, tmp_path: Path) -> None:
    """HF loads it with nothing missing (only the MTP layer, which HF does not build, is left over) and holds
    exactly our tensors: compared through `save_pretrained`, which writes per-expert names in 4.x and 5.x."""
    from transformers import DeepseekV3ForCausalLM

    model, info = DeepseekV3ForCausalLM.from_pretrained(converted, output_loading_info=True, dtype=torch.bfloat16)
    assert not info["missing_keys"]
    assert not info["mismatched_keys"]
    mtp_prefix = f"model.layers.{preset('tiny').num_hidden_layers}."
    assert all(k.startswith(mtp_prefix) for k in info["unexpected_keys"])
    model.save_pretrained(tmp_path / "hf")
    ours, theirs = CheckpointReader(converted), CheckpointReader(tmp_path / "hf")
    assert set(theirs.keys()) == {n for n in ours if not n.startswith(mtp_prefix)}
    for name in theirs:
        assert torch.equal(theirs.get(name), ours.get(name).to(theirs.dtype(name))), name


def test_mtp_drop_removes_the_mtp_layer_on_purpose(tiny_fp8_dir: Path, tmp_path: Path) -> None:
    convert_checkpoint(tiny_fp8_dir, tmp_path / "d", mtp="drop", max_shard_bytes=1 << 30, progress=False)
    keys = CheckpointReader(tmp_path / "d").keys()
    assert not any(k.startswith("model.layers.3.") for k in keys)
    assert load_config(tmp_path / "d").num_nextn_predict_layers == 0
    assert verify_checkpoint(tmp_path / "d") == []


def _claims_complete(dst: Path) -> bool:
    return (dst / "config.json").exists() or (dst / INDEX_NAME).exists()


def test_nan_scale_fails_naming_file_and_tensor(tiny_fp8_copy: Path, tmp_path: Path) -> None:
    name = "model.layers.2.mlp.experts.5.gate_proj.weight_scale_inv"
    shard = tiny_fp8_copy / json.loads((tiny_fp8_copy / INDEX_NAME).read_text())["weight_map"][name]
    tensors = load_file(shard)
    tensors[name][1, 0] = float("nan")
    save_file(tensors, shard, metadata={"format": "pt"})
    dst = tmp_path / "out"
    with pytest.raises(CheckpointError, match=rf"{shard.name}: tensor '{name}' holds NaN/Inf scales"):
        convert_checkpoint(tiny_fp8_copy, dst, max_shard_bytes=SHARD, progress=False)
    assert not _claims_complete(dst)
    assert not list(dst.glob("*.tmp"))


def test_missing_scale_or_wrong_shape_fails_before_writing(tiny_fp8_copy: Path, tmp_path: Path) -> None:
    name = "model.layers.1.self_attn.kv_b_proj.weight_scale_inv"
    index = json.loads((tiny_fp8_copy / INDEX_NAME).read_text())
    shard = tiny_fp8_copy / index["weight_map"].pop(name)
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard, metadata={"format": "pt"})
    (tiny_fp8_copy / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"missing FP8 weight scale '{name}'"):
        convert_checkpoint(tiny_fp8_copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_rerun_keeps_verified_shards_and_redoes_damaged_ones(
    tiny_fp8_dir: Path, converted: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "resume"
    convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)
    shards = sorted(dst.glob("model-*.safetensors"))
    assert len(shards) > 3
    damaged = shards[1]
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # same size, wrong checksum
    damaged.write_bytes(bytes(data))
    (dst / "config.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in shards if p != damaged}
    (dst / "stale.safetensors.tmp").write_bytes(b"partial")
    convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)
    assert {p: p.stat().st_mtime_ns for p in shards if p != damaged} == untouched
    for path in converted.iterdir():
        assert path.read_bytes() == (dst / path.name).read_bytes(), path.name
    assert not (dst / "stale.safetensors.tmp").exists()


def test_rerun_with_other_options_is_refused(tiny_fp8_dir: Path, converted: Path, tmp_path: Path) -> None:
    assert (converted / MANIFEST_NAME).exists()
    with pytest.raises(FileExistsError, match="another source or with other options"):
        convert_checkpoint(tiny_fp8_dir, converted, dtype=torch.float32, max_shard_bytes=SHARD, progress=False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty and not a conversion in progress"):
        convert_checkpoint(tiny_fp8_dir, tmp_path / "x", progress=False)


@pytest.mark.slow  # two spawned worker processes import torch: ~15 s on 2 cores
def test_workers_give_identical_output(tiny_fp8_dir: Path, converted: Path, tmp_path: Path) -> None:
    convert_checkpoint(tiny_fp8_dir, tmp_path / "w", workers=2, max_shard_bytes=SHARD, progress=False)
    for path in converted.iterdir():
        assert path.read_bytes() == (tmp_path / "w" / path.name).read_bytes(), path.name

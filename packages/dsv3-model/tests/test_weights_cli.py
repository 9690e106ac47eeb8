"""`dsv3 make-checkpoint`, `dsv3 convert`, `dsv3 verify-checkpoint`: exit codes and what they leave on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsv3_model.cli.main import main
from dsv3_weights import CheckpointReader, dequantize_fp8_blocks


def test_make_convert_verify_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "fp8", tmp_path / "bf16"
    assert main(["make-checkpoint", str(src), "--preset", "tiny", "--fp8", "--seed", "2", "--no-progress"]) == 0
    assert "quantization_config" in json.loads((src / "config.json").read_text())
    assert main(["verify-checkpoint", str(src), "--no-progress"]) == 0
    assert main(["convert", str(src), str(dst), "--mtp", "drop", "--no-progress"]) == 0
    assert "peak RSS" in capsys.readouterr().err
    out_cfg = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in out_cfg
    assert out_cfg["num_nextn_predict_layers"] == 0
    name = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"  # 40 x 64 with 32 x 32 blocks: partial rows
    with CheckpointReader(src) as fp8, CheckpointReader(dst) as bf16:
        expected = dequantize_fp8_blocks(fp8.get(name), fp8.get(name + "_scale_inv"), (32, 32), torch.bfloat16)
        assert torch.equal(bf16.get(name), expected)
    assert main(["verify-checkpoint", str(dst), "--no-progress"]) == 0


def test_verify_and_convert_fail_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "fp8"
    assert main(["make-checkpoint", str(src), "--preset", "tiny", "--fp8", "--no-progress"]) == 0
    shard = sorted(src.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:20])
    capsys.readouterr()
    assert main(["verify-checkpoint", str(src), "--no-progress"]) == 1
    assert f"{shard.name}: corrupt or truncated safetensors header" in capsys.readouterr().out
    assert main(["convert", str(src), str(tmp_path / "out"), "--no-progress"]) == 1
    assert "dsv3 convert: error:" in capsys.readouterr().err
    assert not (tmp_path / "out" / "config.json").exists()
    assert main(["make-checkpoint", str(src), "--preset", "tiny", "--no-progress"]) == 1  # not empty

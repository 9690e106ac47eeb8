"""`dsv3 plan` end to end through `dsv3_model.cli.main.main`, and that it never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dsv3_model.cli.main import main

V3_TRN2 = ["plan", "--preset", "deepseek-v3", "--tp", "64", "--device", "trn2"]


def test_json_contrib_1024_does_not_fit(capsys):
    assert main([*V3_TRN2, "--layout", "contrib", "--seq-len", "1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is False
    assert out["weights_per_rank"]["latent_projections"]["bytes_per_rank"] == 61 * 7168 * 2112 * 2
    assert out["weights_per_rank"]["router"]["placement"] == "replicated"
    assert 512 <= out["largest_seq_len"] < 1024
    assert out["ranked_changes"][0]["name"] == "fp8_experts"
    assert out["total_bytes"] == out["weight_bytes"] + out["kv_cache_bytes"] + out["scratch_bytes"]


def test_text_dsv3_fp8_reports_floor_and_fit(capsys):
    assert main([*V3_TRN2, "--weights", "fp8", "--seq-len", "1"]) == 0
    text = capsys.readouterr().out
    assert "layout dsv3, tp 64" in text
    assert "fits," in text
    floor_ms = float(text.split("-> floor ")[1].split(" ms")[0])
    assert floor_ms == pytest.approx(0.81, rel=0.05)


def test_contrib_with_fp8_is_an_error(capsys):
    assert main([*V3_TRN2, "--layout", "contrib", "--weights", "fp8"]) == 2
    assert "dequantizes" in capsys.readouterr().err


def test_bad_tp_names_the_field(capsys):
    assert main(["plan", "--preset", "deepseek-v3", "--tp", "3"]) == 2
    assert "tp (3) must divide num_attention_heads" in capsys.readouterr().err


def test_model_directory(tmp_path, capsys):
    from dsv3_config import preset, save_config

    save_config(preset("tiny"), tmp_path)
    assert main(["plan", "--model", str(tmp_path), "--tp", "2", "--device", "h100", "--seq-len", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True


def test_plan_does_not_import_torch():
    code = (
        "import sys; from dsv3_model.cli.main import main; "
        "main(['plan', '--preset', 'deepseek-v3', '--tp', '64', '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr

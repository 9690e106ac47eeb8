"""`dsv3 config show` on the published DeepSeek-R1 (V3 architecture) config.json."""

from __future__ import annotations

import json
from pathlib import Path

from dsv3_model.cli.main import main

R1_CONFIG = Path(__file__).parent / "data" / "deepseek-r1.config.json"


def test_config_show_prints_the_derived_v3_values(capsys):
    assert main(["config", "show", str(R1_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "latent cache width  576 values per token per layer" in out
    assert "softmax scale       0.1352338" in out
    assert "layers              61 (3 dense, 58 MoE)" in out


def test_config_show_json_and_presets(capsys):
    assert main(["config", "show", "deepseek-v2-lite", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["derived"]["latent_cache_width"] == 512 + 64
    assert shown["config"]["q_lora_rank"] is None

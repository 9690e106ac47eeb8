"""`dsv3-plan`, the planner's own command, in a venv that holds no torch (nox `unit(package='plan')`).

Numbers are closed forms from the published DeepSeek-R1 config (61 layers, hidden 7168, q_lora_rank 1536,
kv_lora_rank 512 + qk_rope_head_dim 64, 128 heads, vocab 129280), exact.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from dsv3_plan.cli import main

R1_TRN2 = ["--preset", "deepseek-r1", "--tp", "64", "--device", "trn2"]


def test_r1_json_by_hand(capsys):
    assert main([*R1_TRN2, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    weights = out["weights_per_rank"]
    # dsv3 layout: q_a_proj and kv_a_proj_with_mqa row-parallel, BF16, split 64 ways along hidden
    assert weights["latent_projections"]["bytes_per_rank"] == 61 * (7168 // 64) * (1536 + 576) * 2
    assert weights["lm_head"]["bytes_per_rank"] == (129280 // 64) * 7168 * 2
    assert out["kv_cache_bytes"] == 4096 * 61 * 576 * 2  # one BF16 copy of the latent, seq_len 4096
    assert out["total_bytes"] == out["weight_bytes"] + out["kv_cache_bytes"] + out["scratch_bytes"]


def test_text_names_the_layout(capsys):
    assert main(R1_TRN2) == 0
    assert "layout dsv3, tp 64, ep 1, batch 1, seq_len 4096" in capsys.readouterr().out


def _exit_status(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_options_that_cannot_run_together_exit_2(capsys):
    assert _exit_status(["--preset", "tiny", "--tp", "4", "--ep", "3"]) == 2
    usage, line = capsys.readouterr().err.strip().split("\ndsv3-plan: error: ")
    assert usage.startswith("usage: dsv3-plan")
    assert line == "--ep 3 must divide --tp 4 (each expert group has tp/ep ranks)"


def test_tp_not_dividing_heads_names_the_field(capsys):
    assert _exit_status(["--preset", "deepseek-r1", "--tp", "3"]) == 2
    assert "tp (3) must divide num_attention_heads" in capsys.readouterr().err


def test_directory_without_config_exits_1(tmp_path, capsys):
    assert _exit_status(["--model", str(tmp_path), "--tp", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsv3-plan: error: ")
    assert "config.json" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_option_is_argparse_exit_2(capsys):
    assert _exit_status(["--preset", "tiny", "--tp", "0"]) == 2
    assert "argument --tp: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_console_script_runs_without_torch():
    """The installed `dsv3-plan` script (in nox's plan venv, torch is not even installed)."""
    script = shutil.which("dsv3-plan")
    if script is None:
        pytest.skip("dsv3-plan is not installed as a console script (PYTHONPATH run); nox installs it")
    result = subprocess.run([script, *R1_TRN2, "--json"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "deepseek-r1"


def test_planning_imports_no_torch():
    code = (
        "import sys; from dsv3_plan.cli import main; main(['--preset', 'tiny', '--tp', '1', '--seq-len', '64']); "
        "assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr

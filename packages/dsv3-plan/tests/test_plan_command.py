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


def test_says_which_layout_the_adapter_builds(capsys):
    """The default plan is the layout the NxDI adapter builds: for R1's FP8 checkpoint, FP8 routed experts and BF16
    other linears; BF16 everywhere and FP8 everywhere the adapter can (`fp8`) are built too (by option); the contrib
    port's layout is not."""
    assert main([*R1_TRN2, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["adapter_builds_this_layout"] is True
    assert main([*R1_TRN2, "--weights", "fp8-experts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights_per_rank"] == default["weights_per_rank"]
    assert main([*R1_TRN2, "--weights", "bf16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapter_builds_this_layout"] is True
    assert main([*R1_TRN2, "--weights", "fp8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapter_builds_this_layout"] is True
    assert main([*R1_TRN2, "--layout", "contrib", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapter_builds_this_layout"] is False
    assert main(R1_TRN2) == 0
    text = capsys.readouterr().out
    assert "weights fp8 experts, bf16 other linears" in text
    built = "weights bf16 or fp8-experts or fp8 on device (fp8-experts by default for an FP8 checkpoint); this plan is"
    assert built in text


def test_r1_default_meets_the_issue_15_bounds(capsys):
    """Issue 15's numbers for the layout built by default (FP8 experts) at tp 64 on trn2: at most 1.25 GB read
    per rank per decoded token at batch 1, seq_len 4096, and at least 64K tokens at batch 1."""
    assert main([*R1_TRN2, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decode"]["bytes_per_rank"] <= 1.25e9
    assert out["largest_seq_len"] >= 65536


def test_kimi_k2_fits_one_trn2_48xlarge(capsys):
    """Kimi-K2 (1T parameters; the published config.json, the `kimi-k2` preset) on the 64 logical cores of one
    trn2.48xlarge, in the layout the adapter builds for it (FP8 experts)."""
    assert main(["--preset", "kimi-k2", "--tp", "64", "--device", "trn2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is True
    assert out["adapter_builds_this_layout"] is True


def test_fp8_experts_halve_the_expert_bytes_only(capsys):
    """R1 at tp 64: a 7168 x 2048 expert matrix slice of 32 x 7168 is 229,376 FP8 bytes plus 56 fp32 block
    scales (the adapter's grid: 128 x 32 blocks, one per 128 x 128 checkpoint block the slice cuts), three per
    expert, 256 experts, 58 layers."""
    assert main([*R1_TRN2, "--weights", "fp8-experts", "--json"]) == 0
    weights = json.loads(capsys.readouterr().out)["weights_per_rank"]
    assert weights["experts"]["bytes_per_rank"] == 58 * 256 * 3 * (32 * 7168 + 4 * 56)
    assert weights["attention"]["bytes_per_rank"] == 61 * (1536 * 24576 + 512 * 32768 + 16384 * 7168) // 64 * 2


def test_expert_parallel_at_batch_1_exits_2(capsys):
    assert _exit_status([*R1_TRN2, "--ep", "8"]) == 2
    assert "needs batch x num_experts_per_tok >= n_routed_experts for decode" in capsys.readouterr().err


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

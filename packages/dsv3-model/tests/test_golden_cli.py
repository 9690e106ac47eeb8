"""`dsv3 golden` and `dsv3 verify --golden`, in process (and once in a subprocess to see what it imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dsv3_config import preset
from dsv3_model.cli.main import main
from dsv3_model.cli.options import byte_size
from dsv3_model.generation import generate, teacher_forced_logits
from dsv3_model.loading import load_causal_lm
from dsv3_weights.synthetic import make_checkpoint

PROMPT = "5,9,13,2,7"


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli") / "ckpt", preset("tiny"), fp8=False, seed=4, progress=False)


@pytest.fixture(scope="module")
def golden_path(bf16_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "golden.pt"
    args = ["golden", "--model", str(bf16_dir), "--prompt-ids", PROMPT, "--max-new-tokens", "6", "--out", str(path)]
    assert main([*args, "--max-memory", "64KiB", "--no-progress"]) == 0
    return path


def test_golden_prints_tokens_and_summary(bf16_dir, tmp_path, capsys):
    out = tmp_path / "g.pt"
    args = ["golden", "--model", str(bf16_dir), "--prompt-ids", PROMPT, "--max-new-tokens", "4", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    model = load_causal_lm(bf16_dir, dtype=torch.float32, include_mtp=False)
    expected = generate(model, [[int(t) for t in PROMPT.split(",")]], 4).tokens[0]
    assert [int(t) for t in captured.out.split()] == expected
    assert "read " in captured.err
    assert "peak RSS" in captured.err
    assert out.exists()


def test_verify_against_its_own_golden_file_passes(bf16_dir, golden_path, capsys):
    assert main(["verify", "--model", str(bf16_dir), "--golden", str(golden_path)]) == 0
    report = capsys.readouterr().out
    assert "teacher-forced top-1 match: 6/6" in report
    assert "free-running token match:   6/6" in report
    assert "golden logit" in report
    assert report.strip().endswith("PASS")


def test_verify_another_model_fails(golden_path, tmp_path, capsys):
    other = make_checkpoint(tmp_path / "other", preset("tiny"), fp8=False, seed=99, progress=False)
    assert main(["verify", "--model", str(other), "--golden", str(golden_path)]) == 1
    assert capsys.readouterr().out.strip().endswith("FAIL")


def test_verify_with_golden_never_imports_transformers(bf16_dir, golden_path):
    code = (
        "import sys; from dsv3_model.cli.main import main; "
        f"rc = main(['verify', '--model', {str(bf16_dir)!r}, '--golden', {str(golden_path)!r}]); "
        "assert 'transformers' not in sys.modules, 'transformers imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_teacher_forced_scores_every_position(bf16_dir, tmp_path, capsys):
    out = tmp_path / "tf.pt"
    args = ["golden", "--model", str(bf16_dir), "--prompt-ids", PROMPT, "--teacher-forced", "3,4,5", "--out", str(out)]
    assert main(args) == 0
    obj = torch.load(out, weights_only=True)
    ids = [int(t) for t in PROMPT.split(",")] + [3, 4, 5]
    expected = teacher_forced_logits(load_causal_lm(bf16_dir, dtype=torch.float32, include_mtp=False), ids)
    assert torch.equal(obj.logits[0], expected)
    assert torch.equal(torch.stack(obj.scores)[:, 0], expected[4:7])


def test_sizes_are_powers_of_1024():
    assert byte_size("1GB") == byte_size("1GiB") == byte_size("1g") == 1024**3
    assert byte_size("512MiB") == 512 * 1024**2
    assert byte_size("1.5K") == 1536
    assert byte_size("4096") == 4096

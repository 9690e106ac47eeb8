"""The `dsv3 generate` and `dsv3 verify` commands, run in-process on synthetic checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from dsv3_config import preset
from dsv3_model.cli.main import main
from dsv3_model.generation import generate
from dsv3_model.loading import load_causal_lm, random_causal_lm
from dsv3_weights.synthetic import make_checkpoint


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli"), preset("tiny"), fp8=False, seed=11, progress=False)


def test_generate_with_no_model_runs_the_embedded_tiny_preset(capsys):
    assert main(["generate", "--prompt-ids", "1,2,3", "--max-new-tokens", "6"]) == 0
    printed = [int(tok) for tok in capsys.readouterr().out.split()]
    expected = generate(random_causal_lm("tiny", seed=0, dtype=torch.float32), [[1, 2, 3]], 6).tokens[0]
    assert printed == expected


def test_generate_from_a_checkpoint_batches_prompts(bf16_dir, capsys):
    assert main(["generate", "--model", str(bf16_dir), "--prompt-ids", "5,6,7;8,9", "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    model = load_causal_lm(bf16_dir, dtype=torch.float32)
    expected = generate(model, [[5, 6, 7], [8, 9]], 4).tokens
    assert [[int(t) for t in line.split()] for line in lines] == expected


def test_generate_stops_at_eos():
    model = random_causal_lm("tiny", seed=0, dtype=torch.float32)
    free = generate(model, [[1, 2, 3]], 8).tokens[0]
    stop = free[3]
    stopped = generate(model, [[1, 2, 3]], 8, eos_token_ids=[stop]).tokens[0]
    assert stopped == free[: free.index(stop) + 1]


def test_generate_rejects_out_of_vocabulary_ids(capsys):
    assert main(["generate", "--prompt-ids", "1,999"]) == 2
    assert "--prompt-ids: id 2 is 999, outside the vocabulary 0..255" in capsys.readouterr().err


def test_generate_up_to_max_position_embeddings_runs_and_one_past_is_refused(capsys):
    # tiny: max_position_embeddings 1024; 1016 prompt ids + 8 new tokens end exactly at position 1023
    prompt = ",".join(["5"] * 1016)
    assert main(["generate", "--prompt-ids", prompt, "--max-new-tokens", "8"]) == 0
    assert len(capsys.readouterr().out.split()) <= 8
    assert main(["generate", "--prompt-ids", prompt + ",5", "--max-new-tokens", "8"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "= 1025 positions, past the model's max_position_embeddings (1024)" in err
    assert "--allow-long" in err


def test_generate_allow_long_warns_and_runs_past_the_limit(capsys):
    ids = [(7 * i) % 256 for i in range(1020)]
    assert main(["generate", "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", "8", "--allow-long"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "dsv3 generate: warning: prompt (1020 tokens) + --max-new-tokens (8) = 1028 positions, past the model's "
        "max_position_embeddings (1024); running anyway (--allow-long)"
    ]
    model = random_causal_lm("tiny", seed=0, dtype=torch.float32)
    expected = generate(model, [ids], 8, eos_token_ids=[model.config.eos_token_id]).tokens[0]
    assert [int(tok) for tok in captured.out.split()] == expected


def test_verify_passes_on_a_checkpoint_and_reports_json(bf16_dir, capsys):
    assert main(["verify", "--model", str(bf16_dir), "--tokens", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"]
    assert report["teacher_forced_matches"] == 8
    assert report["free_running_matches"] == 8
    assert report["max_abs_logit_diff"] <= 1e-4


def test_verify_fails_with_nonzero_exit_when_tolerance_is_not_met(bf16_dir, capsys):
    assert main(["verify", "--model", str(bf16_dir), "--tokens", "4", "--tolerance", "0"]) == 1
    assert capsys.readouterr().out.strip().endswith("FAIL")


def test_generate_text_in_and_out_with_the_directory_tokenizer(bf16_dir, tmp_path, capsys):
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model_dir = tmp_path / "with-tokenizer"
    shutil.copytree(bf16_dir, model_dir)
    word_level = Tokenizer(models.WordLevel({f"w{i}": i for i in range(256)}, unk_token="w0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=word_level).save_pretrained(model_dir)

    assert main(["generate", "--model", str(model_dir), "--prompt", "w5 w6 w7", "--max-new-tokens", "4"]) == 0
    expected = generate(load_causal_lm(bf16_dir, dtype=torch.float32), [[5, 6, 7]], 4).tokens[0]
    assert capsys.readouterr().out.split() == ["w5", "w6", "w7", *[f"w{t}" for t in expected]]


def test_generate_with_a_damaged_tokenizer_is_one_line(bf16_dir, tmp_path, capsys):
    import shutil

    model_dir = tmp_path / "damaged-tokenizer"
    shutil.copytree(bf16_dir, model_dir)
    (model_dir / "tokenizer.json").write_text('{"model": ')
    assert main(["generate", "--model", str(model_dir), "--prompt", "w5 w6"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dsv3 generate: error: {model_dir}: the tokenizer does not load: ")
    assert len(err.splitlines()) == 1

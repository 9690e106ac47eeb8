"""The golden file as NxDI's `inference_demo.py` reads it (`torch.load`, `torch.stack(obj.scores)`)."""

from __future__ import annotations

import pytest
import torch

from dsv3_config import preset
from dsv3_model.generation import generate
from dsv3_model.golden.golden_file import GoldenFileError, read_golden, write_golden
from dsv3_model.golden.run import golden_greedy
from dsv3_model.loading import load_causal_lm
from dsv3_weights.synthetic import make_checkpoint

PROMPTS = [[4, 9, 2, 7], [11, 3, 8, 5]]
NEW_TOKENS = 5


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    return make_checkpoint(
        tmp_path_factory.mktemp("golden-file") / "ckpt", preset("tiny"), fp8=True, seed=2, progress=False
    )


@pytest.fixture(scope="module")
def golden_path(fp8_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "golden.pt"
    write_golden(path, golden_greedy(fp8_dir, PROMPTS, NEW_TOKENS).golden, model="tiny", dtype="fp32")
    return path


def test_loads_weights_only_with_scores_of_n_batch_vocab(golden_path, fp8_dir):
    obj = torch.load(golden_path, weights_only=True)
    expected_logits = torch.stack(obj.scores)  # inference_demo.py, run_accuracy_check
    assert expected_logits.shape == (NEW_TOKENS, len(PROMPTS), preset("tiny").vocab_size)
    model = load_causal_lm(fp8_dir, dtype=torch.float32, include_mtp=False)
    expected = generate(model, PROMPTS, NEW_TOKENS)
    assert expected_logits.argmax(dim=2).T.tolist() == expected.tokens  # how NxDI derives the tokens
    assert obj.sequences.tolist() == [p + t for p, t in zip(PROMPTS, expected.tokens, strict=True)]
    assert obj["scores"][0] is obj.scores[0]  # items and attributes are the same objects


def test_written_whole_under_its_name(golden_path):
    assert sorted(p.name for p in golden_path.parent.iterdir()) == ["golden.pt"]
    golden = read_golden(golden_path)
    assert golden.prompt_length == len(PROMPTS[0])
    assert golden.mode == "greedy"


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"PK\x03\x04truncated"])
def test_unreadable_file_is_one_named_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(GoldenFileError, match=r"bad\.pt: not a golden file"):
        read_golden(path)


def test_a_state_dict_is_not_a_golden_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(GoldenFileError, match=r"no \.scores"):
        read_golden(path)

"""The measured CPU kernels (`dsv3_model.cpu_kernels`): a model whose layers run the oneDNN-prepacked forms
matches transformers as the plain model does, keeps what must stay plain, and refuses to compile.

Tolerance: fp32 max |logit diff| <= 1e-4 against transformers 4.57/5.x (as test_model_hf_parity: only the
fp32 summation order differs; measured ~1e-6), greedy tokens identical.
"""

from __future__ import annotations

import pytest
import torch
from model_cases import model_configs, ours_from_hf
from torch import nn

from dsv3_blocks.packed_linear import PackedLinear
from dsv3_model.cli.main import main
from dsv3_model.cpu_kernels import runs_eager_only_kernels, use_measured_kernels
from dsv3_model.generation import generate, teacher_forced_logits
from dsv3_model.loading import random_causal_lm
from dsv3_model.verify import hf_greedy
from dsv3_moe.packed_experts import PackedExperts
from dsv3_testing.hf_reference import hf_causal_lm

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
CONFIGS = model_configs()


@pytest.mark.parametrize("name", ["tiny", "v2-lite-like"])
def test_packed_everywhere_matches_transformers(name: str) -> None:
    cfg = CONFIGS[name]
    hf = hf_causal_lm(cfg, seed=1)
    ours = ours_from_hf(cfg, hf)
    kinds = use_measured_kernels(ours, everywhere=True)
    assert kinds["PackedExperts"] == cfg.num_hidden_layers - cfg.first_k_dense_replace
    assert "Linear" not in kinds  # every projection packed but the ones that must stay plain (below)
    prompt = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(2)).tolist()
    golden = hf_greedy(hf, prompt, 16)
    with torch.inference_mode():
        hf_logits = hf(torch.tensor([prompt + golden])).logits[0]
    ours_logits = teacher_forced_logits(ours, prompt + golden)
    assert (ours_logits - hf_logits).abs().max() <= 1e-4
    assert generate(ours, [prompt], 16).tokens[0] == golden


def test_what_must_stay_plain_stays_plain() -> None:
    tied = CONFIGS["tiny"].replace(tie_word_embeddings=True)
    hf = hf_causal_lm(tied, seed=1)
    ours = ours_from_hf(tied, hf)
    use_measured_kernels(ours, everywhere=True)
    assert type(ours.lm_head) is nn.Linear
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    for layer in ours.model.layers:
        assert type(layer.self_attn.kv_b_proj) is nn.Linear  # absorbed attention reads its matrix
        assert isinstance(layer.self_attn.o_proj, PackedLinear)
    assert isinstance(ours.model.layers[1].mlp.experts, PackedExperts)


def test_a_packed_model_decodes_eagerly_and_refuses_to_compile() -> None:
    model = random_causal_lm("tiny", seed=0, dtype=torch.float32, kernels="reference")
    use_measured_kernels(model, everywhere=True)
    assert runs_eager_only_kernels(model)
    assert generate(model, [[1, 2, 3]], 4).decode_path == "eager"  # "auto" has nothing to switch to
    with pytest.raises(ValueError, match="kernels='reference'"):
        generate(model, [[1, 2, 3]], 4, compile_decode=True)


def test_kernels_option_is_checked() -> None:
    with pytest.raises(ValueError, match="kernels must be one of"):
        random_causal_lm("tiny", seed=0, dtype=torch.float32, kernels="fast")  # type: ignore[arg-type]


def test_cli_refuses_measured_kernels_with_a_compiled_decode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--kernels", "measured", "--compile-decode", "on"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--kernels measured" in line
    assert "--compile-decode on" in line

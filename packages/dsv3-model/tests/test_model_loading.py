"""Loading checkpoint directories written by dsv3-weights, against transformers' own loader."""

from __future__ import annotations

import pytest
import torch

from dsv3_config import preset
from dsv3_model.generation import teacher_forced_logits
from dsv3_model.hf_bridge import load_hf_causal_lm
from dsv3_model.loading import load_causal_lm
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.synthetic import make_checkpoint

FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("bf16"), preset("tiny"), fp8=False, seed=3, progress=False)


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("fp8"), preset("tiny"), fp8=True, seed=3, progress=False)


def test_bf16_checkpoint_matches_transformers_loading_the_same_directory(bf16_dir):
    ours = load_causal_lm(bf16_dir, dtype=torch.float32)
    hf = load_hf_causal_lm(bf16_dir)
    ids = list(range(3, 40))
    with torch.inference_mode():
        expected = hf(torch.tensor([ids])).logits[0]
    assert (teacher_forced_logits(ours, ids) - expected).abs().max().item() <= FP32_TOL


def test_mtp_layer_is_loaded_when_present_and_skipped_on_request(bf16_dir):
    cfg = preset("tiny")
    with_mtp = load_causal_lm(bf16_dir, dtype=torch.float32, include_mtp=True, kernels="reference")
    without = load_causal_lm(bf16_dir, dtype=torch.float32, include_mtp=False, kernels="reference")
    assert len(with_mtp.mtp_layers) == 1
    assert not without.mtp_layers
    key = f"model.layers.{cfg.num_hidden_layers}.eh_proj.weight"
    with CheckpointReader(bf16_dir) as reader:
        assert torch.equal(with_mtp.state_dict()[key], reader.get(key).float())
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        assert torch.equal(with_mtp(ids), without(ids))  # generation ignores the MTP layer


def test_fp8_checkpoint_loads_dequantized(fp8_dir):
    """Every FP8 weight equals fp8 * scale per block (checked on one partial-block tensor by hand)."""
    cfg = preset("tiny")
    model = load_causal_lm(fp8_dir, dtype=torch.float32, include_mtp=False, kernels="reference")  # plain weights
    name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"  # 40 x 64 with 32 x 32 blocks: partial rows
    with CheckpointReader(fp8_dir) as reader:
        fp8 = reader.get(name).float()
        scale = reader.get(name + "_scale_inv")
    block = cfg.quantization_config.weight_block_size  # type: ignore[union-attr]
    expected = torch.empty_like(fp8)
    for bi in range(scale.shape[0]):
        for bj in range(scale.shape[1]):
            rows = slice(bi * block[0], (bi + 1) * block[0])
            cols = slice(bj * block[1], (bj + 1) * block[1])
            expected[rows, cols] = fp8[rows, cols] * scale[bi, bj]
    assert torch.equal(model.state_dict()[name], expected)


def test_router_stays_fp32_in_a_bf16_model(bf16_dir):
    model = load_causal_lm(bf16_dir, dtype=torch.bfloat16, kernels="reference")
    router = model.model.layers[1].mlp.gate
    assert router.weight.dtype == torch.float32
    assert router.e_score_correction_bias.dtype == torch.float32
    assert model.lm_head.weight.dtype == torch.bfloat16


def test_inconsistent_index_is_named(tmp_path, bf16_dir):
    import json
    import shutil

    from dsv3_weights.errors import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(bf16_dir, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.norm.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight"):
        load_causal_lm(broken, dtype=torch.float32)


def test_missing_tensors_are_named_before_anything_is_copied():
    from dsv3_model.causal_lm import DeepseekForCausalLM
    from dsv3_model.state_dict_map import fill_model

    cfg = preset("tiny")
    source = DeepseekForCausalLM(cfg).state_dict()
    target = DeepseekForCausalLM(cfg)
    missing = {"model.norm.weight", "model.layers.1.mlp.experts.gate_up_proj"}
    with pytest.raises(KeyError, match=r"model\.norm\.weight") as err:
        fill_model(target, cfg, source.__getitem__, set(source) - missing)
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in str(err.value)

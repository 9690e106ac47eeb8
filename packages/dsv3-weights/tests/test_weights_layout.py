"""The checkpoint layout against transformers' own parameter names and shapes, and DeepSeek's FP8/MTP rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsv3_config import ModelConfig, preset
from dsv3_testing.hf_reference import hf_causal_lm, transformers_major
from dsv3_weights import CheckpointReader
from dsv3_weights.layout import checkpoint_layout, stored_tensors

V2_LITE_LIKE = {
    "model_type": "deepseek_v2",
    "topk_method": "greedy",
    "scoring_func": "softmax",
    "q_lora_rank": None,
    "n_group": 1,
    "topk_group": 1,
}


@pytest.mark.parametrize("changes", [{}, V2_LITE_LIKE, {"attention_bias": True}], ids=["tiny", "v2-lite-like", "bias"])
def test_non_mtp_layout_equals_hf_checkpoint(changes: dict[str, object], tmp_path: Path) -> None:
    """transformers' `save_pretrained` names and shapes (both major versions write per-expert names);
    under 4.x its in-memory `state_dict()` too (5.x fuses experts in memory, docs/environment.md)."""
    cfg = preset("tiny").replace(**changes)
    model = hf_causal_lm(cfg)
    ours = {name: spec.shape for name, spec in checkpoint_layout(cfg).items() if not spec.mtp}
    model.save_pretrained(tmp_path)
    with CheckpointReader(tmp_path) as saved:
        assert {name: saved.shape(name) for name in saved} == ours
    if transformers_major() < 5:
        assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == ours


def test_fp8_tensors_are_exactly_the_linears_of_attention_and_mlps() -> None:
    cfg = preset("tiny")
    layout = checkpoint_layout(cfg)
    fp8 = {name for name, spec in layout.items() if spec.fp8}
    linear_suffixes = ("_proj.weight", "_proj_with_mqa.weight")
    expected = {
        name
        for name in layout
        if name.endswith(linear_suffixes) and ".eh_proj." not in name  # MTP eh_proj is BF16
    }
    assert fp8 == expected
    for name in (
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.layers.1.mlp.gate.weight",
        "model.layers.1.mlp.gate.e_score_correction_bias",
        "model.layers.0.input_layernorm.weight",
    ):
        assert not layout[name].fp8
    # Per layer: 5 attention linears (q_a, q_b, kv_a, kv_b, o) plus 3 per dense MLP, routed or shared expert.
    dense_mlp, moe_mlp = 3, 3 * cfg.n_routed_experts + 3
    layers = [dense_mlp] + [moe_mlp] * 2 + [moe_mlp]  # layers 0..2 and the MTP layer 3
    assert len(fp8) == sum(5 + m for m in layers)


def test_mtp_layer_keys_follow_the_v3_release() -> None:
    cfg: ModelConfig = preset("tiny")
    mtp = {name: spec for name, spec in checkpoint_layout(cfg).items() if spec.mtp}
    p = f"model.layers.{cfg.num_hidden_layers}."
    assert all(name.startswith(p) for name in mtp)
    h, v = cfg.hidden_size, cfg.vocab_size
    extras = {
        "embed_tokens.weight": (v, h),
        "enorm.weight": (h,),
        "hnorm.weight": (h,),
        "eh_proj.weight": (h, 2 * h),
        "shared_head.norm.weight": (h,),
        "shared_head.head.weight": (v, h),
    }
    for suffix, shape in extras.items():
        assert mtp[p + suffix].shape == shape
    # plus a full MoE decoder block shaped like layer 1
    block = {
        k.removeprefix("model.layers.1."): s.shape
        for k, s in checkpoint_layout(cfg).items()
        if k.startswith("model.layers.1.")
    }
    assert {k.removeprefix(p): s.shape for k, s in mtp.items() if k.removeprefix(p) not in extras} == block
    assert not any(s.mtp for s in checkpoint_layout(cfg, include_mtp=False).values())
    assert len(checkpoint_layout(cfg, include_mtp=False)) == len(checkpoint_layout(cfg)) - len(mtp)


def test_stored_scales_cover_partial_blocks() -> None:
    cfg = preset("tiny")  # block 32 x 32; kv_a_proj_with_mqa is (32 + 8) x 64: 1.25 row blocks
    stored = stored_tensors(checkpoint_layout(cfg), quantized_block=(32, 32))
    assert stored["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"][0] == (2, 2)
    assert str(stored["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"][1]) == "torch.float8_e4m3fn"
    assert str(stored["model.layers.1.mlp.gate.e_score_correction_bias"][1]) == "torch.float32"
    assert "model.layers.1.mlp.gate.weight_scale_inv" not in stored

"""The inventory's own rules, by hand on the `tiny` preset (h=64, q LoRA 48, kv LoRA 32, rope 8, 3 layers
of which layer 0 dense, 16 routed experts of width 48, one shared expert, one MTP layer). That the
declarations equal what transformers and our modules build is checked where torch is (dsv3-mla,
dsv3-moe, dsv3-weights and dsv3-model tests); here: the per-expert expansion, the conditions, the counts."""

from __future__ import annotations

from dsv3_config import Split, count_params, preset
from dsv3_config.inventory import expert_stacks, model_tensors, per_expert

TINY = preset("tiny")
H, E, INTER, LAYERS = 64, 16, 48, 3


def test_stacked_experts_expand_expert_by_expert_in_checkpoint_order() -> None:
    names = [name for name in model_tensors(TINY) if name.startswith("model.layers.1.mlp.experts.")]
    assert names[:4] == [
        "model.layers.1.mlp.experts.0.gate_proj.weight",
        "model.layers.1.mlp.experts.0.up_proj.weight",
        "model.layers.1.mlp.experts.0.down_proj.weight",
        "model.layers.1.mlp.experts.1.gate_proj.weight",
    ]
    assert len(names) == 3 * E


def test_per_expert_sources_drop_the_expert_dim_and_the_ep_split() -> None:
    gate_up, down = expert_stacks(TINY)
    assert gate_up.shape == (E, 2 * INTER, H)
    assert down.shape == (E, H, INTER)
    gate, up = per_expert(gate_up, 5)
    (down_5,) = per_expert(down, 5)
    assert (gate.name, up.name, down_5.name) == (
        "experts.5.gate_proj.weight",
        "experts.5.up_proj.weight",
        "experts.5.down_proj.weight",
    )
    assert gate.shape == up.shape == (INTER, H)
    assert down_5.shape == (H, INTER)
    # column-parallel gate/up, row-parallel down: what a dense SwiGLU of the same widths has
    assert gate.placement == up.placement == (Split(dim=0, mesh_axis="tp"),)
    assert down_5.placement == (Split(dim=1, mesh_axis="tp"),)
    assert gate.fp8
    assert down_5.stacked_from is None


def test_attention_bias_adds_three_vectors_per_layer() -> None:
    """transformers' bias rule: q_a_proj (48), kv_a_proj_with_mqa (kv LoRA + rope = 40), o_proj (64)."""
    with_bias = TINY.replace(attention_bias=True)
    extra = count_params(with_bias).total - count_params(TINY).total
    assert extra == LAYERS * (48 + 40 + 64)
    assert count_params(with_bias).mtp - count_params(TINY).mtp == 48 + 40 + 64
    biases = {name for name, decl in model_tensors(with_bias).items() if name.endswith(".bias")}
    assert len(biases) == 3 * (LAYERS + 1)
    assert not any(model_tensors(with_bias)[name].fp8 for name in biases)


def test_conditions_select_the_tensors() -> None:
    no_lora = model_tensors(TINY.replace(q_lora_rank=None), include_mtp=False)
    assert "model.layers.0.self_attn.q_proj.weight" in no_lora
    assert not any(".q_a_" in name or ".q_b_" in name for name in no_lora)
    greedy = model_tensors(TINY.replace(topk_method="greedy", scoring_func="softmax"), include_mtp=False)
    assert not any(name.endswith("e_score_correction_bias") for name in greedy)
    assert not any(".shared_experts." in name for name in model_tensors(TINY.replace(n_shared_experts=0)))
    tied = model_tensors(TINY.replace(tie_word_embeddings=True))
    assert "lm_head.weight" not in tied
    assert "model.embed_tokens.weight" in tied
    assert model_tensors(TINY)["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == "float32"


def test_mtp_layer_is_flagged_and_optional() -> None:
    full, main = model_tensors(TINY), model_tensors(TINY, include_mtp=False)
    mtp = {name for name, decl in full.items() if decl.mtp}
    assert mtp == set(full) - set(main)
    assert all(name.startswith("model.layers.3.") for name in mtp)
    assert full["model.layers.3.eh_proj.weight"].shape == (H, 2 * H)

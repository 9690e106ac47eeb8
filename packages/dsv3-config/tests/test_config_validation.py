"""Every invalid config raises one error type, naming the field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dsv3_config import ConfigError, DeploymentConfig, ModelConfig, load_config, preset


def tiny_with(**changes: Any) -> dict[str, Any]:
    return {**preset("tiny").to_hf(), **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hidden_size": "wide"}, "hidden_size"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": True}, "hidden_size"),  # transformers would build a 1-wide model
        ({"hidden_size": 64.0}, "hidden_size"),  # transformers: nn.Linear(64.0, ...) raises TypeError
        ({"num_hidden_layers": "3"}, "num_hidden_layers"),
        ({"norm_topk_prob": 1}, "norm_topk_prob"),
        ({"rms_norm_eps": "1e-6"}, "rms_norm_eps"),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps"),
        ({"num_attention_heads": -4}, "num_attention_heads"),
        ({"vocab_size": 10**30}, "vocab_size"),
        ({"vocab_size": 2**62}, "embed_tokens"),  # each field fits int64, vocab x hidden does not
        ({"topk_group": 5}, "topk_group"),
        ({"n_routed_experts": 18}, "n_routed_experts"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling"),
        ({"rope_scaling": {"type": "yarn", "factor": 4.0, "beta_fast": 0}}, "beta_fast"),
        ({"rope_scaling": {"type": "yarn", "factor": 4.0, "beta_slow": -1.0}}, "beta_slow"),
        ({"rope_scaling": {"type": "yarn", "factor": 4.0, "mscale_all_dim": -10 / math.log(4.0)}}, "mscale_all_dim"),
        ({"scoring_func": "relu"}, "scoring_func"),
        ({"topk_method": "noaux_tc", "scoring_func": "softmax"}, "scoring_func"),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [0, 128]}}, "weight_block_size"),
        ({"qk_rope_head_dim": 7}, "qk_rope_head_dim"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"rope_interleave": False}, "rope_interleave"),
        ({"model_type": "llama"}, "model_type"),
    ],
)
def test_invalid_field_is_named_on_one_line(changes, field):
    with pytest.raises(ConfigError, match=field) as info:
        load_config(tiny_with(**changes))
    assert "\n" not in str(info.value)


def test_missing_model_type_is_named():
    raw = tiny_with()
    del raw["model_type"]
    with pytest.raises(ConfigError, match="model_type"):
        load_config(raw)


@pytest.mark.parametrize("betas", [(1.0, 1.0), (32, 1), (2.0, 8.0)])
def test_any_positive_betas_load(betas):
    """transformers runs equal betas (Kimi-K2: 1/1, its ramp guard adds 0.001) and beta_fast < beta_slow
    (a logged warning); so does dsv3."""
    scaling = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    cfg = load_config(tiny_with(rope_scaling={**scaling, "beta_fast": betas[0], "beta_slow": betas[1]}))
    assert cfg.rope_scaling is not None
    assert (cfg.rope_scaling.beta_fast, cfg.rope_scaling.beta_slow) == betas


def test_yarn_without_original_max_uses_max_position_embeddings():
    """transformers' `_compute_yarn_parameters`: `original_max_position_embeddings or max_position_embeddings`."""
    cfg = load_config(tiny_with(rope_scaling={"type": "yarn", "factor": 4.0}, max_position_embeddings=2048))
    assert cfg.rope_scaling is not None
    assert cfg.rope_scaling.original_max_position_embeddings == 2048


def test_more_dense_layers_than_layers_is_all_dense():
    """transformers builds every layer dense when `first_k_dense_replace >= num_hidden_layers`; so does dsv3."""
    cfg = load_config(tiny_with(first_k_dense_replace=7))
    assert (cfg.num_dense_layers, cfg.num_moe_layers) == (3, 0)


def test_config_is_frozen():
    cfg = preset("tiny")
    with pytest.raises(ValidationError):
        cfg.hidden_size = 128  # type: ignore[misc]


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=3),
    st.dictionaries(
        st.sampled_from(["type", "factor", "rope_type", "original_max_position_embeddings"]),
        st.integers(-2, 50),
        max_size=4,
    ),
)


@pytest.mark.filterwarnings("ignore::dsv3_config.UnusedConfigKeysWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.dictionaries(
        st.sampled_from([*sorted(ModelConfig.model_fields), "rope_parameters", "junk"]), _values, max_size=4
    ),
    deletions=st.sets(st.sampled_from(sorted(ModelConfig.model_fields)), max_size=2),
)
def test_random_configs_raise_only_config_errors(mutations, deletions):
    raw = tiny_with(**mutations)
    for key in deletions:
        raw.pop(key, None)
    try:
        cfg = load_config(raw)
    except ConfigError:
        return
    assert isinstance(cfg, ModelConfig)  # anything that loads is a consistent config
    assert cfg.n_routed_experts % cfg.n_group == 0


@pytest.mark.parametrize(
    ("deployment", "message"),
    [
        ({"tp": 3, "seq_len": 128}, "num_attention_heads"),
        ({"tp": 4, "ep": 3, "seq_len": 128}, "n_routed_experts"),
        ({"tp": 2, "ep": 4, "seq_len": 128}, "must divide tp"),
        ({"tp": 1, "seq_len": 10**6}, "max_position_embeddings"),
    ],
)
def test_deployment_validation_names_the_field(deployment, message):
    with pytest.raises(ValueError, match=message):
        DeploymentConfig(**deployment).validate_for(preset("tiny"))


def test_v3_on_trn2_layout_is_valid():
    v3 = preset("deepseek-v3")
    deployment = DeploymentConfig(tp=64, ep=8, seq_len=4096).validate_for(v3)
    assert deployment.moe_tp == 8

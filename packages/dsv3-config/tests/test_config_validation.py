"""Every invalid config raises one error type, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dsv3_config import DeploymentConfig, ModelConfig, load_config, preset


def tiny_with(**changes: Any) -> dict[str, Any]:
    return {**preset("tiny").to_hf(), **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hidden_size": "wide"}, "hidden_size"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_attention_heads": -4}, "num_attention_heads"),
        ({"topk_group": 5}, "topk_group"),
        ({"n_routed_experts": 18}, "n_routed_experts"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling"),
        ({"first_k_dense_replace": 4}, "first_k_dense_replace"),
        ({"scoring_func": "relu"}, "scoring_func"),
        ({"topk_method": "noaux_tc", "scoring_func": "softmax"}, "scoring_func"),
        ({"rope_scaling": {"type": "yarn", "factor": 40.0}}, "original_max_position_embeddings"),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [0, 128]}}, "weight_block_size"),
        ({"qk_rope_head_dim": 7}, "qk_rope_head_dim"),
    ],
)
def test_invalid_field_is_named(changes, field):
    with pytest.raises(ValidationError, match=field):
        load_config(tiny_with(**changes))


def test_missing_required_field_is_named():
    raw = tiny_with()
    del raw["kv_lora_rank"]
    with pytest.raises(ValidationError, match="kv_lora_rank"):
        load_config(raw)


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
def test_random_configs_raise_only_validation_errors(mutations, deletions):
    raw = tiny_with(**mutations)
    for key in deletions:
        raw.pop(key, None)
    try:
        cfg = load_config(raw)
    except ValidationError:
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

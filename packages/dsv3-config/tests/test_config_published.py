"""Published configs parse, and their derived values equal numbers computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dsv3_config import LayerKind, count_params, load_config, preset

SHARED_CONFIGS = Path(__file__).resolve().parents[3].parent / "shared" / "configs"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def v3():
    return load_config(DATA / "deepseek-r1.config.json")


def test_test_data_is_the_published_file():
    """tests/data holds verbatim copies of shared/configs (present in every checkout's sibling)."""
    if not SHARED_CONFIGS.is_dir():
        pytest.skip("shared/configs is not beside this checkout")
    for name in ("deepseek-r1.config.json", "deepseek-v2.5.config.json"):
        assert json.loads((DATA / name).read_text()) == json.loads((SHARED_CONFIGS / name).read_text())


def test_v3_head_and_cache_dims(v3):
    assert v3.qk_head_dim == 128 + 64
    assert v3.latent_cache_width == 512 + 64 == 576


def test_v3_softmax_scale_matches_hand_computation(v3):
    # 192^-0.5 = 0.0721688; mscale(40, 1.0) = 0.1 * ln(40) + 1 = 1.3688879; squared = 1.8738542
    assert v3.softmax_scale == pytest.approx(0.1352338, abs=1e-6)
    assert v3.softmax_scale == pytest.approx(192**-0.5 * (0.1 * math.log(40) + 1) ** 2, rel=1e-12)


def test_v3_layer_kinds(v3):
    kinds = v3.layer_kinds
    assert len(kinds) == 61
    assert kinds[:3] == (LayerKind.DENSE,) * 3
    assert set(kinds[3:]) == {LayerKind.MOE}
    assert v3.layer_kind(61) is LayerKind.MOE  # the MTP layer is a MoE block


def test_v3_parameter_counts(v3):
    counts = count_params(v3)
    assert counts.total == pytest.approx(671e9, rel=0.01)  # DeepSeek: "671B total" (HF builds 671.03 B)
    # One token reads 36.6 B weights (REFERENCE_PORT.md "Physical limits"); DeepSeek rounds it to "37B".
    assert counts.activated == pytest.approx(36.6e9, rel=0.001)
    assert counts.activated == pytest.approx(37e9, rel=0.0105)


def test_v3_fp8_and_yarn_blocks(v3):
    assert v3.quantization_config is not None
    assert v3.quantization_config.weight_block_size == (128, 128)
    assert v3.rope_scaling is not None
    assert v3.rope_scaling.original_max_position_embeddings == 4096
    assert v3.yarn_policy == "always"


def test_v2_5_routing_and_scale():
    v2 = load_config(DATA / "deepseek-v2.5.config.json")
    assert (v2.topk_method, v2.scoring_func, v2.n_group, v2.topk_group) == ("group_limited_greedy", "softmax", 8, 3)
    # transformers 4.57 DeepseekV2Attention uses qk_head_dim^-0.5 with no YaRN mscale (NUMERICS.md section 7)
    assert v2.softmax_scale == pytest.approx(192**-0.5, rel=1e-12)
    assert v2.layer_kinds.count(LayerKind.DENSE) == 1


@pytest.mark.parametrize(
    ("name", "total_b", "total_rounding", "activated_b", "activated_rounding"),
    [
        ("deepseek-v2-lite", 15.7, 0.05, 2.4, 0.06),  # model card: "15.7B total, 2.4B activated" (2.45)
        ("kimi-k2", 1000.0, 50.0, 32.0, 0.5),  # model card: "1T total, 32B activated"
        ("moonlight", 16.0, 0.5, 3.0, 0.5),  # model card: "16B total, 3B activated" (Moonlight-16B-A3B)
    ],
)
def test_family_parameter_counts_match_model_cards(name, total_b, total_rounding, activated_b, activated_rounding):
    """Model cards round; the tolerance is half the unit each card rounds to."""
    counts = count_params(preset(name))
    assert abs(counts.total / 1e9 - total_b) <= total_rounding
    assert abs(counts.activated / 1e9 - activated_b) <= activated_rounding


def test_moe_layer_freq():
    cfg = preset("tiny").replace(num_hidden_layers=6, first_k_dense_replace=1, moe_layer_freq=2)
    assert [k.value for k in cfg.layer_kinds] == ["dense", "dense", "moe", "dense", "moe", "dense"]

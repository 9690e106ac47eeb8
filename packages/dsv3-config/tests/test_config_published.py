"""Each published config.json loads, and its derived values equal numbers computed by hand.

Hand computations (transformers 4.57 `DeepseekV3Attention`: softmax scale `qk_head_dim^-0.5 * mscale^2`
with `mscale = 0.1 * mscale_all_dim * ln(factor) + 1`; `DeepseekV2Attention`: `qk_head_dim^-0.5` only) are
written next to each expectation. Parameter counts are checked against the model cards, which round; the
tolerance is half the unit each card rounds to (exact counts against transformers' meta-device model are in
dsv3-model's test_model_published_configs.py).
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
from published_cases import PUBLISHED_FILES, PUBLISHED_NAMES, SHARED_CONFIGS, published_config

from dsv3_config import LayerKind, count_params, load_config, preset
from dsv3_config.hf_defaults import REFERENCE_DEFAULTS

V3_SCALE = 192**-0.5 * (0.1 * math.log(40) + 1) ** 2  # 0.0721688 * 1.3688879^2 = 0.1352338
KIMI_SCALE = 192**-0.5 * (0.1 * math.log(32) + 1) ** 2  # 0.0721688 * 1.3465736^2 = 0.1308608
PLAIN_SCALE = 192**-0.5  # 0.0721688

# name: (model_type, topk_method, scoring_func, q_lora_rank, YaRN factor or None, softmax scale,
#        dense layers, MoE layers, eos_token_id)
EXPECTED = {
    "deepseek-v3.config.json": ("deepseek_v3", "noaux_tc", "sigmoid", 1536, 40.0, V3_SCALE, 3, 58, 1),
    "deepseek-r1.config.json": ("deepseek_v3", "noaux_tc", "sigmoid", 1536, 40.0, V3_SCALE, 3, 58, 1),
    "kimi-k2-instruct.config.json": ("kimi_k2", "noaux_tc", "sigmoid", 1536, 32.0, KIMI_SCALE, 1, 60, 163585),
    "moonlight-16b-a3b.config.json": ("deepseek_v3", "noaux_tc", "sigmoid", None, None, PLAIN_SCALE, 1, 26, 163586),
    "deepseek-v2.5.config.json": ("deepseek_v2", "group_limited_greedy", "softmax", 1536, 40.0, PLAIN_SCALE, 1, 59,
                                  100001),
    "deepseek-v2-lite.config.json": ("deepseek_v2", "greedy", "softmax", None, 40.0, PLAIN_SCALE, 1, 26, 100001),
}  # fmt: skip


def test_every_published_file_has_expectations():
    assert sorted(EXPECTED) == PUBLISHED_NAMES


def test_package_data_is_the_published_files():
    """The shipped JSON equals `shared/configs` key for key (that folder sits beside every checkout's repo)."""
    if not SHARED_CONFIGS.is_dir():
        pytest.skip(f"no shared/configs beside the repository ({SHARED_CONFIGS.parent} absent)")
    assert sorted(path.name for path in SHARED_CONFIGS.glob("*.json")) == PUBLISHED_NAMES
    for name in PUBLISHED_NAMES:
        assert published_config(name) == json.loads((SHARED_CONFIGS / name).read_text()), name


@pytest.mark.parametrize("preset_name", sorted(PUBLISHED_FILES))
def test_preset_is_the_published_file(preset_name):
    raw = published_config(PUBLISHED_FILES[preset_name])
    assert preset(preset_name) == load_config(raw)
    written = preset(preset_name).to_hf()
    assert {key: written[key] for key in raw} == raw  # nothing lost or changed
    assert set(written) - set(raw) <= set(REFERENCE_DEFAULTS[raw["model_type"]])  # only omitted keys' defaults


@pytest.mark.parametrize("name", PUBLISHED_NAMES)
def test_published_file_loads_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config(published_config(name))
    model_type, topk, scoring, q_lora, factor, scale, dense, moe, eos = EXPECTED[name]
    assert (cfg.model_type, cfg.topk_method, cfg.scoring_func, cfg.q_lora_rank) == (model_type, topk, scoring, q_lora)
    assert cfg.rope_scaling_factor == (factor or 1.0)
    assert (cfg.rope_scaling is None) == (factor is None)
    assert cfg.softmax_scale == pytest.approx(scale, rel=1e-12)
    assert (cfg.num_dense_layers, cfg.num_moe_layers) == (dense, moe)
    assert cfg.layer_kinds.count(LayerKind.MOE) == moe
    assert cfg.eos_token_id == eos
    assert cfg.qk_head_dim == 128 + 64
    assert cfg.latent_cache_width == 512 + 64 == 576


def test_kimi_k2_keeps_its_equal_betas():
    scaling = preset("kimi-k2").rope_scaling
    assert scaling is not None
    assert (scaling.beta_fast, scaling.beta_slow, scaling.factor) == (1.0, 1.0, 32.0)


def test_moonlight_has_no_yarn_and_its_own_eps_and_eos():
    cfg = preset("moonlight")
    assert cfg.rope_scaling is None
    assert (cfg.eos_token_id, cfg.rms_norm_eps, cfg.rope_theta) == (163586, 1e-5, 50000.0)


def test_v3_softmax_scale_is_the_known_number():
    assert preset("deepseek-v3").softmax_scale == pytest.approx(0.1352338, abs=1e-7)


def test_v3_parameter_counts_with_and_without_mtp():
    counts = count_params(preset("deepseek-v3"))
    assert counts.total == pytest.approx(671e9, rel=0.001)  # "671B total" (transformers builds 671.03 B)
    assert counts.total_with_mtp == pytest.approx(685e9, abs=0.6e9)  # "685B" on the hub (671B + 14B MTP)
    # README_WEIGHTS: "11.5B unique parameters, excluding the shared 0.9B Embedding and 0.9B output Head"
    # (its "671B + 14B" rounds loosely: 11.61 + 2 x 0.93 = 13.46 B).
    assert counts.mtp == pytest.approx(11.5e9, abs=0.15e9)
    assert counts.mtp_shared == 2 * 129280 * 7168
    # One token reads 36.6 B weights (docs/reference-port.md "Physical limits"); DeepSeek rounds it to "37B".
    assert counts.activated == pytest.approx(36.6e9, rel=0.001)


@pytest.mark.parametrize(
    ("name", "total_b", "total_rounding", "activated_b", "activated_rounding"),
    [
        ("deepseek-v2.5", 236.0, 0.5, 21.0, 0.5),  # model card: "236B total, 21B activated"
        ("deepseek-v2-lite", 15.7, 0.05, 2.4, 0.06),  # model card: "15.7B total, 2.4B activated" (2.45)
        ("kimi-k2", 1000.0, 50.0, 32.0, 0.5),  # model card: "1T total, 32B activated"
        ("moonlight", 16.0, 0.5, 3.0, 0.5),  # model card: "16B total, 3B activated" (Moonlight-16B-A3B)
    ],
)
def test_family_parameter_counts_match_model_cards(name, total_b, total_rounding, activated_b, activated_rounding):
    counts = count_params(preset(name))
    assert abs(counts.total / 1e9 - total_b) <= total_rounding
    assert abs(counts.activated / 1e9 - activated_b) <= activated_rounding
    assert counts.mtp == counts.mtp_shared == 0  # none of them has an MTP layer


def test_mtp_count_is_one_moe_layer_plus_its_projections():
    """By hand for tiny (h=64): the MTP layer is layer 3, MoE; plus enorm, hnorm, shared_head.norm (3h) and
    eh_proj (2h x h); its embedding and head copies are 2 x vocab x h."""
    cfg = preset("tiny")
    counts, no_mtp = count_params(cfg), count_params(cfg.replace(num_nextn_predict_layers=0))
    moe_layer = count_params(cfg.replace(num_hidden_layers=4, num_nextn_predict_layers=0)).total - no_mtp.total
    assert counts.mtp == moe_layer + 3 * 64 + 2 * 64 * 64
    assert counts.mtp_shared == 2 * 256 * 64
    assert counts.total == no_mtp.total


def test_layer_counts_are_closed_form_at_any_depth():
    """10^18 layers: counted without a loop (a loop would not finish), matching the formula by hand."""
    cfg = preset("tiny").replace(num_hidden_layers=10**18, first_k_dense_replace=5, moe_layer_freq=3)
    # multiples of 3 in [5, 10^18): 6, 9, ..., 999...999 -> (10^18 - 1) // 3 - 4 // 3
    assert cfg.num_moe_layers == (10**18 - 1) // 3 - 1
    assert cfg.num_dense_layers == 10**18 - cfg.num_moe_layers
    assert count_params(cfg).total > 10**18


def test_moe_layer_freq():
    cfg = preset("tiny").replace(num_hidden_layers=6, first_k_dense_replace=1, moe_layer_freq=2)
    assert [k.value for k in cfg.layer_kinds] == ["dense", "dense", "moe", "dense", "moe", "dense"]
    assert (cfg.num_dense_layers, cfg.num_moe_layers) == (4, 2)

"""Loading, round-tripping and the transformers-5 spelling."""

from __future__ import annotations

import pytest
from published_cases import published_config

from dsv3_config import PRESETS, UnusedConfigKeysWarning, load_config, preset, save_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_hf_dict(name):
    cfg = preset(name)
    assert load_config(cfg.to_hf()) == cfg


def test_published_file_round_trips_key_for_key():
    raw = published_config("deepseek-r1.config.json")
    assert load_config(raw).to_hf() == raw


def test_save_and_load_directory(tmp_path):
    cfg = preset("tiny")
    save_config(cfg, tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert load_config(tmp_path) == cfg


def test_transformers5_rope_parameters_spelling():
    legacy = preset("deepseek-v3").to_hf()
    v5 = dict(legacy)
    scaling = v5.pop("rope_scaling")
    v5.pop("rope_theta")
    v5["rope_parameters"] = {
        **{k: v for k, v in scaling.items() if k != "type"},
        "rope_type": "yarn",
        "rope_theta": 10000.0,
    }
    assert load_config(v5) == load_config(legacy)


def test_transformers5_default_rope_means_no_scaling():
    raw = preset("moonlight").to_hf()
    raw.pop("rope_scaling")
    raw.pop("rope_theta")
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 50000.0}
    cfg = load_config(raw)
    assert cfg.rope_scaling is None
    assert cfg.rope_theta == 50000.0


def test_unknown_keys_warn_and_survive():
    raw = {**preset("tiny").to_hf(), "my_new_knob": 3, "initializer_range": 0.02}
    with pytest.warns(UnusedConfigKeysWarning, match="my_new_knob") as record:
        cfg = load_config(raw)
    assert "initializer_range" not in str(record[0].message)  # known HF bookkeeping is not noise
    assert cfg.to_hf()["my_new_knob"] == 3
    assert cfg.to_hf()["initializer_range"] == 0.02


def test_yarn_policy_round_trips():
    cfg = preset("deepseek-v3").replace(yarn_policy="extended_context_only")
    assert cfg.to_hf()["yarn_policy"] == "extended_context_only"
    assert load_config(cfg.to_hf()) == cfg

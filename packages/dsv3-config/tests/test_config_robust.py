"""Damaged `config.json` files: each is one `ConfigError` line naming the file and, where there is one, the
field. Never a traceback from json, pydantic, the int-to-str limit or the recursion limit."""

from __future__ import annotations

import json
import time

import pytest
from published_cases import published_config

from dsv3_config import ConfigError, load_config, preset

V3 = published_config("deepseek-v3.config.json")


def _text(**changes: object) -> str:
    return json.dumps({**V3, **changes})


def _raw_value(key: str, token: str) -> str:
    """V3's config.json with `key`'s value written as the literal JSON text `token`."""
    return json.dumps({**V3, key: "@@"}).replace('"@@"', token)


CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "NaN token": (_raw_value("rms_norm_eps", "NaN").encode(), ("rms_norm_eps", "NaN")),
    "Infinity token": (_raw_value("rope_theta", "Infinity").encode(), ("rope_theta", "Infinity")),
    "-Infinity nested": (
        _text(rope_scaling={**V3["rope_scaling"], "factor": "@@"}).replace('"@@"', "-Infinity").encode(),
        ("rope_scaling.factor", "Infinity"),
    ),
    "NaN in an unused key": (_raw_value("initializer_range", "NaN").encode(), ("initializer_range",)),
    '"NaN" string': (_text(rms_norm_eps="NaN").encode(), ("rms_norm_eps",)),
    '"Infinity" string': (_text(routed_scaling_factor="Infinity").encode(), ("routed_scaling_factor",)),
    "layer count 1e18 (a float)": (_raw_value("num_hidden_layers", "1e18").encode(), ("num_hidden_layers",)),
    "float where an int goes": (_text(hidden_size=7168.0).encode(), ("hidden_size",)),
    "boolean where an int goes": (_text(num_attention_heads=True).encode(), ("num_attention_heads",)),
    "vocab 10**30": (_text(vocab_size=10**30).encode(), ("vocab_size",)),
    "5000-digit integer": (_raw_value("vocab_size", "9" * 5000).encode(), ("vocab_size", "5000 digits")),
    "5000-digit integer in an unused key": (_raw_value("ep_size", "1" * 5000).encode(), ("ep_size", "digits")),
    "invalid UTF-8": (_text().encode().replace(b'"silu"', b'"\xff\xfe"'), ("not UTF-8",)),
    "deep nesting": (("[" * 100_000 + "]" * 100_000).encode(), ("nested",)),
    "deep nesting under a key": (_raw_value("auto_map", "{" + '"a":{' * 50_000 + "}" * 50_001).encode(), ("nested",)),
    "JSON array": (b"[1, 2, 3]", ("JSON object", "array")),
    "JSON string": (b'"deepseek_v3"', ("JSON object", "string")),
    "JSON null": (b"null", ("JSON object", "null")),
    "empty file": (b"", ("not valid JSON",)),
    "truncated": (_text().encode()[:300], ("not valid JSON",)),
    "string as rope_scaling": (_text(rope_scaling="yarn").encode(), ("rope_scaling",)),
    "unknown model_type": (_text(model_type="llama").encode(), ("model_type",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_file_is_one_config_error_line(tmp_path, case):
    content, expected = CASES[case]
    path = tmp_path / "config.json"
    path.write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - started < 1.0
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for part in expected:
        assert part in message


def test_directory_without_config_json(tmp_path):
    with pytest.raises(ConfigError, match=r"no config\.json") as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as info:
        load_config(tmp_path / "absent" / "config.json")
    assert "absent" in str(info.value)


def test_huge_layer_count_loads_at_once():
    """10^18 layers fits int64 and every tensor is small: a valid (if unrunnable-in-practice) config whose
    counts are closed-form, so loading does not hang."""
    started = time.perf_counter()
    cfg = load_config({**V3, "num_hidden_layers": 10**18})
    assert cfg.num_moe_layers == 10**18 - 3
    assert time.perf_counter() - started < 1.0


def test_non_finite_python_float_in_a_dict_is_refused():
    with pytest.raises(ConfigError, match="initializer_range"):
        load_config({**V3, "initializer_range": float("inf")})


def test_unknown_preset_lists_the_known_names():
    with pytest.raises(ConfigError, match=r"unknown preset 'tiny3'.*deepseek-v3.*kimi-k2.*moonlight"):
        preset("tiny3")

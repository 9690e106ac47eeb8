"""Property: 2,400 configs made by mutating the six published files go through `load_config`; each either
loads into a config without NaN or infinity anywhere (fields, derived values, the HF dict it writes back)
or raises `ConfigError` with one line, and nothing takes a second.

A seeded generator (not hypothesis) so every run tries the same 2,400 cases in ~10 s; a failure prints the
case's seed and mutations. A quarter go through a file (JSON text, NaN tokens included) rather than a dict.
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

import pytest
from published_cases import PUBLISHED_NAMES, published_config

from dsv3_config import ConfigError, count_params, load_config

CASES_PER_FILE = 400
JUNK: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 3, 7, 64, 2**31, 2**63 - 1, 2**63, 10**18, 10**30, -(10**30), 10**400,
    0.0, -0.0, 0.5, 1.0, 1e-300, 1e300, -1e300, 1e18, float("nan"), float("inf"), float("-inf"),
    "", "NaN", "Infinity", "-Infinity", "1e18", "7168", "yarn", "deepseek_v3", "deepseek_v2", "kimi_k2",
    "noaux_tc", "greedy", "group_limited_greedy", "sigmoid", "softmax", "\udcff", "x" * 10_000,
    [], [1], [128, 128], [0, 128], [[[[]]]], {}, {"type": "yarn"}, {"type": "yarn", "factor": 4.0},
    {"rope_type": "default"}, {"a": {"b": {"c": float("nan")}}},
)  # fmt: skip


def _junk(rng: random.Random) -> Any:
    value = rng.choice(JUNK)
    if rng.random() < 0.1:  # deep nesting, short of json's own recursion limit
        for _ in range(rng.randrange(1, 400)):
            value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _mutate(raw: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    data = json.loads(json.dumps(raw))
    log = []
    for _ in range(rng.randint(1, 4)):
        target = data
        nested = [k for k, v in data.items() if isinstance(v, dict)]
        if nested and rng.random() < 0.3:
            key = rng.choice(nested)
            target, where = data[key], f"{key}."
        else:
            where = ""
        keys = list(target) or ["missing"]
        key = rng.choice([*keys, "rope_parameters", "junk_key", "hf_extra"])
        action = rng.random()
        if action < 0.25:
            target.pop(key, None)
            log.append(f"drop {where}{key}")
        elif action < 0.4 and isinstance(target.get(key), (int, float)) and not isinstance(target.get(key), bool):
            factor = rng.choice([-1, 0, 2, 10**6, 10**20, 0.5, 1.5])
            target[key] = target[key] * factor
            log.append(f"{where}{key} *= {factor}")
        else:
            target[key] = _junk(rng)
            log.append(f"{where}{key} = {str(target[key])[:40]}")
    return data, log


def _non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def _check_loaded(cfg: Any) -> None:
    assert not _non_finite(cfg.model_dump())
    hf = cfg.to_hf()
    json.dumps(hf, allow_nan=False)  # the HF dict it writes is valid JSON
    counts = count_params(cfg)
    assert counts.total > 0
    assert math.isfinite(cfg.softmax_scale)
    assert cfg.softmax_scale > 0
    assert cfg.num_dense_layers + cfg.num_moe_layers == cfg.num_hidden_layers


@pytest.mark.filterwarnings("ignore::dsv3_config.UnusedConfigKeysWarning")
@pytest.mark.parametrize("name", PUBLISHED_NAMES)
def test_mutated_published_configs_load_or_raise_config_error(tmp_path, name):
    raw = published_config(name)
    loaded = refused = 0
    for case in range(CASES_PER_FILE):
        seed = case * 7919 + len(name)
        rng = random.Random(seed)
        data, log = _mutate(raw, rng)
        started = time.perf_counter()
        try:
            if case % 4 == 0:
                path = tmp_path / "config.json"
                path.write_text(json.dumps(data), encoding="utf-8", errors="surrogatepass")
                cfg = load_config(path)
            else:
                cfg = load_config(data)
        except ConfigError as err:
            refused += 1
            message = str(err)
            assert "\n" not in message, (seed, log)
        else:
            loaded += 1
            _check_loaded(cfg)
        assert time.perf_counter() - started < 1.0, (seed, log)
    print(f"{name}: {loaded} loaded, {refused} refused")
    assert loaded > CASES_PER_FILE // 10  # the mutations are not all fatal ...
    assert refused > CASES_PER_FILE // 10  # ... nor all harmless

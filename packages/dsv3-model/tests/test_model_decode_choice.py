"""`generate(compile_decode="auto")` without compiling: the decision rule on hand-computed times, the record
file, and the eager path taken (no dynamo frame at all) where no record or a losing record exists.
The compiling cases are in test_model_compiled_decode.py (slow)."""

from __future__ import annotations

import json

import torch
import torch._dynamo
from model_cases import model_configs

from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.decode_choice import (
    PROBE_STEPS,
    CompiledRecord,
    cache_path,
    compiled_record,
    read_record,
    shape_key,
    should_switch,
    write_record,
)
from dsv3_model.generation import generate
from dsv3_model.random_init import init_random_weights

PROMPTS = ([3, 17, 5, 9, 11, 2, 7], [4, 8, 15, 16])
STEPS = 12


def tiny_model() -> DeepseekForCausalLM:
    model = DeepseekForCausalLM(model_configs()["tiny"]).eval()
    init_random_weights(model, seed=3)
    return model


def test_switch_when_the_steps_left_repay_the_compile() -> None:
    eager = [9.0, 0.010, 0.012, 0.011]  # the first step is not counted: median 0.011 s
    record = CompiledRecord(compile_s=2.0, step_s=0.006)  # 5 ms saved per step: 400 steps repay 2 s
    assert PROBE_STEPS == 4
    assert not should_switch(eager, 400, record, compiled=False)  # 0.005 * 400 = 2.0, not more
    assert should_switch(eager, 401, record, compiled=False)
    assert should_switch(eager, 1, record, compiled=True)  # already compiled here: any saving wins
    assert not should_switch(eager, 10**9, CompiledRecord(compile_s=0.0, step_s=0.011), compiled=True)
    assert not should_switch(eager, 10**9, None, compiled=False)  # nothing measured: stay eager
    assert not should_switch(eager[:3], 10**9, record, compiled=False)


def test_record_of_a_compiled_run_separates_compile_from_steps() -> None:
    record = compiled_record([20.5, 0.5, 0.4, 0.6])
    assert record is not None
    assert abs(record.step_s - 0.5) < 1e-12
    assert abs(record.compile_s - 20.0) < 1e-12
    assert compiled_record([20.5, 0.5]) is None


def test_records_round_trip_through_the_cache_file() -> None:
    write_record("k1", CompiledRecord(compile_s=1.5, step_s=0.25))
    write_record("k2", CompiledRecord(compile_s=3.0, step_s=0.5))
    assert read_record("k1") == CompiledRecord(compile_s=1.5, step_s=0.25)
    assert read_record("k2") == CompiledRecord(compile_s=3.0, step_s=0.5)
    assert read_record("absent") is None
    assert sorted(json.loads(cache_path().read_text())) == ["k1", "k2"]
    assert not list(cache_path().parent.glob("*.tmp"))
    cache_path().write_text("{not json")
    assert read_record("k1") is None  # a damaged file is measured again, never an error


def test_auto_stays_eager_without_a_record_or_with_a_losing_one() -> None:
    model = tiny_model()
    key = shape_key(model, model.config, len(PROMPTS), len(PROMPTS[0]) + STEPS)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    eager = generate(model, PROMPTS, STEPS, compile_decode=False)
    unrecorded = generate(model, PROMPTS, STEPS)
    write_record(key, CompiledRecord(compile_s=1e6, step_s=0.0))  # a compile no run of 12 steps repays
    losing = generate(model, PROMPTS, STEPS)
    assert unrecorded.decode_path == losing.decode_path == eager.decode_path == "eager"
    assert unrecorded.tokens == losing.tokens == eager.tokens
    assert len(unrecorded.step_seconds) == STEPS - 1
    assert counters["stats"]["unique_graphs"] == 0
    assert read_record(key) == CompiledRecord(compile_s=1e6, step_s=0.0)  # eager runs write nothing

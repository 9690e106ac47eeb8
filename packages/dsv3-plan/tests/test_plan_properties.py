"""Property tests: per-rank memory is affine in seq_len and linear (beyond weights) in batch; doubling tp
halves exactly the sharded weight families and leaves replicated ones and the cache alone; the scratch does
not grow (the dsv3 prefill's attention score block is per local head)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dsv3_config import preset
from dsv3_plan import contrib_layout, deployment, device, dsv3_layout, make_plan

# tp values dividing heads, intermediate sizes and vocab of the configs below (V3: 128 heads, vocab 129280)
CASES = st.sampled_from([("deepseek-v3", 128), ("kimi-k2", 64), ("medium", 16)])
LAYOUTS = st.sampled_from([contrib_layout(), dsv3_layout("bf16")])


def _total(name, layout, tp=8, seq_len=64, batch=1):
    cfg = preset(name)
    return make_plan(cfg, deployment(cfg, layout, tp=tp, seq_len=seq_len, batch_size=batch), layout, device("trn2"))


@settings(max_examples=40, deadline=None)
@given(case=CASES, layout=LAYOUTS, s=st.integers(1, 2000), batch=st.integers(1, 8))
def test_memory_is_affine_in_seq_len(case, layout, s, batch):
    """Exact second difference zero: m(s) - 2 m(s+d) + m(s+2d) == 0 (up to the scratch's rounding to a byte)."""
    name, _ = case
    m = [_total(name, layout, seq_len=s + d * 100, batch=batch).total_bytes for d in range(3)]
    assert abs(m[0] - 2 * m[1] + m[2]) <= 2
    assert m[1] > m[0]


@settings(max_examples=40, deadline=None)
@given(case=CASES, layout=LAYOUTS, s=st.integers(1, 2000), batch=st.integers(1, 16), factor=st.integers(2, 4))
def test_non_weight_memory_is_proportional_to_batch(case, layout, s, batch, factor):
    name, _ = case
    one, many = _total(name, layout, seq_len=s, batch=batch), _total(name, layout, seq_len=s, batch=batch * factor)
    assert many.weight_bytes == one.weight_bytes
    assert many.kv_cache_bytes == factor * one.kv_cache_bytes
    assert abs(many.scratch_bytes - factor * one.scratch_bytes) <= factor


@settings(max_examples=40, deadline=None)
@given(case=CASES, layout=LAYOUTS, exponent=st.integers(0, 6))
def test_doubling_tp_halves_sharded_families_only(case, layout, exponent):
    name, max_tp = case
    tp = 2**exponent
    if 2 * tp > max_tp:
        tp = max_tp // 2
    small, large = _total(name, layout, tp=tp), _total(name, layout, tp=2 * tp)
    for before, after in zip(small.families, large.families, strict=True):
        if before.placement == "replicated":
            assert after.bytes_per_rank == before.bytes_per_rank, before.name
        else:
            assert 2 * after.bytes_per_rank == before.bytes_per_rank, before.name
    assert large.kv_cache_bytes == small.kv_cache_bytes
    assert large.scratch_bytes <= small.scratch_bytes


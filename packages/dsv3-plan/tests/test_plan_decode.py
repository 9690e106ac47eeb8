"""Decode floors for V3 on trn2.48xlarge against docs/reference-port.md's physical limits.

73.2 GB (BF16) / 37.7 GB (FP8 with block scales) activated per token over 46.4 TB/s = 1.58 / 0.81 ms.
The dsv3 layout at TP 64 splits every byte a token reads (norms aside), so one rank's floor is that. The
adapter's FP8 layout (`--weights fp8`) keeps `kv_b_proj` BF16 (the absorbed attention reads it as a matrix,
`dsv3_config.inventory.fp8_linears`): one more byte for each of its 61 x 32768 x 512 parameters than 37.7 GB.
"""

from __future__ import annotations

import pytest

from dsv3_config import count_params, preset
from dsv3_plan import deployment, device, dsv3_layout, make_plan
from dsv3_plan.bandwidth import experts_touched

TOLERANCE = 0.05  # the bar for reproducing published figures


def _dsv3(weights: str, seq_len: int = 1, batch: int = 1):
    cfg = preset("deepseek-v3")
    layout = dsv3_layout(weights)  # type: ignore[arg-type]
    dep = deployment(
        cfg, layout, tp=64, seq_len=seq_len, batch_size=batch, weight_dtype="bfloat16" if weights == "bf16" else "fp8"
    )
    return make_plan(cfg, dep, layout, device("trn2"))


def test_bf16_decode_floor_is_about_1_6_ms():
    plan = _dsv3("bf16")  # seq_len 1: the published floor counts weights only
    assert plan.decode.seconds == pytest.approx(1.58e-3, rel=TOLERANCE)
    weights_read = plan.decode.bytes_per_rank - plan.decode_reads["kv_cache"]
    # across 64 ranks: the activated parameters at 2 bytes, within 1% (replicated norms, fp32 bias)
    assert 64 * weights_read == pytest.approx(2 * count_params(preset("deepseek-v3")).activated, rel=0.01)


def test_fp8_decode_floor_is_about_0_8_ms():
    plan = _dsv3("fp8")
    assert plan.decode.seconds == pytest.approx(0.81e-3, rel=TOLERANCE)
    kv_b_in_bf16 = 61 * 32768 * 512
    assert 64 * plan.decode.bytes_per_rank == pytest.approx(37.7e9 + kv_b_in_bf16, rel=0.01)


def test_cache_read_adds_one_copy_per_position():
    short, long = _dsv3("bf16", seq_len=1), _dsv3("bf16", seq_len=4097)
    assert long.decode.bytes_per_rank - short.decode.bytes_per_rank == 4096 * 61 * 576 * 2


def test_experts_touched_by_one_and_by_many_tokens():
    cfg = preset("deepseek-v3")
    assert experts_touched(cfg, 1) == pytest.approx(8.0, rel=1e-12)
    assert experts_touched(cfg, 2) == pytest.approx(256 * (1 - (248 / 256) ** 2), rel=1e-12)  # 15.75
    assert experts_touched(cfg, 4096) == pytest.approx(256.0, rel=1e-9)


def test_prefill_is_bounded_below_by_its_bytes_and_flops():
    plan = _dsv3("bf16", seq_len=4096)
    dev = device("trn2")
    assert plan.prefill.seconds >= plan.prefill.bytes_per_rank / dev.hbm_bytes_per_s
    assert plan.prefill.seconds >= plan.prefill.flops_per_rank / dev.bf16_flops_per_s
    # 4096 tokens touch every expert: the prefill reads (at least) all weights once
    assert plan.prefill.bytes_per_rank >= plan.weight_bytes * 0.999

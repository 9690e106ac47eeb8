"""Largest seq_len / batch that fit, checked by planning one past them; the ranked layout changes."""

from __future__ import annotations

import pytest

from dsv3_config import preset
from dsv3_plan import (
    contrib_layout,
    deployment,
    device,
    dsv3_layout,
    largest_batch,
    largest_seq_len,
    make_plan,
    ranked_changes,
)


def _plan(cfg, layout, **fields):
    return make_plan(cfg, deployment(cfg, layout, **fields), layout, device("trn2"))


@pytest.mark.parametrize(
    ("name", "layout", "tp"),
    [
        ("deepseek-v3", contrib_layout(), 64),
        ("deepseek-v3", dsv3_layout("bf16"), 64),
        ("deepseek-v2-lite", dsv3_layout("bf16"), 2),
    ],
)
def test_largest_seq_len_fits_and_one_more_does_not(name, layout, tp):
    cfg = preset(name)
    dep = deployment(cfg, layout, tp=tp, seq_len=512)
    s = largest_seq_len(cfg, dep, layout, device("trn2"))
    assert s >= 1
    assert _plan(cfg, layout, tp=tp, seq_len=s).fits
    if s < cfg.max_position_embeddings:
        assert not _plan(cfg, layout, tp=tp, seq_len=s + 1).fits


def test_nothing_fits_reports_zero():
    """V2-Lite's 15.7 B parameters are 31.4 GB in BF16: more than one 24 GiB trn2 rank holds."""
    cfg, layout = preset("deepseek-v2-lite"), dsv3_layout("bf16")
    dep = deployment(cfg, layout, tp=1, seq_len=512)
    assert largest_seq_len(cfg, dep, layout, device("trn2")) == 0
    assert largest_batch(cfg, dep, layout, device("trn2")) == 0
    assert not _plan(cfg, layout, tp=1, seq_len=1).fits


def test_contrib_v3_largest_seq_len_lies_between_the_published_points():
    cfg, layout = preset("deepseek-v3"), contrib_layout()
    s = largest_seq_len(cfg, deployment(cfg, layout, tp=64, seq_len=512), layout, device("trn2"))
    assert 512 <= s < 1024


def test_largest_batch_fits_and_one_more_does_not():
    cfg, layout = preset("deepseek-v3"), dsv3_layout("fp8")
    dep = deployment(cfg, layout, tp=64, seq_len=4096, weight_dtype="fp8")
    b = largest_batch(cfg, dep, layout, device("trn2"))
    assert b >= 1
    assert _plan(cfg, layout, tp=64, seq_len=4096, batch_size=b, weight_dtype="fp8").fits
    assert not _plan(cfg, layout, tp=64, seq_len=4096, batch_size=b + 1, weight_dtype="fp8").fits


def test_contrib_ranking_fp8_experts_first_and_savings_add_up():
    cfg = preset("deepseek-v3")
    base = _plan(cfg, contrib_layout(), tp=64, seq_len=1024)
    changes = ranked_changes(cfg, base)
    names = [c.name for c in changes]
    assert names[0] == "fp8_experts"
    assert set(names) == {
        "fp8_experts",
        "fp8_attention_and_mlps",
        "shard_latent_projections",
        "shard_router",
        "expert_parallel",
        "single_copy_cache",
    }
    saved = [c.memory_saved_bytes for c in changes]
    assert saved == sorted(saved, reverse=True)
    by_name = {c.name: c for c in changes}
    # sharding q_a/kv_a frees 63/64 of 1.847 GB; a single cache copy frees one copy at 1024 positions
    assert by_name["shard_latent_projections"].memory_saved_bytes == 61 * 7168 * 2112 * 2 * 63 // 64
    assert by_name["single_copy_cache"].memory_saved_bytes == 1024 * 61 * 576 * 2
    assert by_name["single_copy_cache"].decode_read_saved_bytes == 0  # decode reads one copy already
    assert by_name["fp8_experts"].fits_after


def test_expert_parallel_moves_expert_bytes_without_saving_any():
    cfg = preset("deepseek-v3")
    layout = dsv3_layout("bf16")
    tp_only, ep = _plan(cfg, layout, tp=64, seq_len=512), _plan(cfg, layout, tp=64, ep=8, seq_len=512)
    assert ep.family("experts").bytes_per_rank == tp_only.family("experts").bytes_per_rank
    assert ep.family("experts").placement == "ep x tp"
    assert ep.decode_reads["experts"] == tp_only.decode_reads["experts"]

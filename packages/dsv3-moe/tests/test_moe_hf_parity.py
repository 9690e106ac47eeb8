"""Parity with transformers' `DeepseekV3MoE` / `DeepseekV2MoE` (4.57; `DeepseekV2Moe` in 5.x), weights copied
through `load_hf_moe_state_dict` (the stacking declaration).

Tolerances: fp32 outputs within 1e-5 absolute on O(1)-O(10) outputs (the same fp32 matmuls, reordered
sums and a fused gate|up matmul: measured <= 1e-6; scale 16 for the V2 case multiplies both). Router weights
within 1e-6 (same fp32 operations; only the order of the K-term normalizing sum differs). Expert indices
must be identical (compared as sets per token: transformers returns them unsorted).
"""

from __future__ import annotations

import pytest
import torch
from moe_cases import CONFIGS, build_moe, by_expert, random_hidden

from dsv3_moe import load_hf_moe_state_dict
from dsv3_testing.hf_moe import hf_moe_block, hf_moe_route


# `topk_fills_groups` and all-negative biases are where transformers 4.57's 0.0 mask differs: see
# test_moe_router_edges.py.
@pytest.mark.parametrize("name", ["tiny", "kimi_like", "v2_lite_like", "v2_group_limited"])
def test_fp32_matches_transformers(name: str) -> None:
    cfg = CONFIGS[name]
    hf = hf_moe_block(cfg, seed=1)
    ours = build_moe(cfg)
    load_hf_moe_state_dict(ours, hf.state_dict(), cfg)
    hidden = random_hidden(cfg, seed=2, shape=(3, 11))
    with torch.no_grad():
        want_idx, want_weight = by_expert(*hf_moe_route(hf, hidden))
        got_idx, got_weight = by_expert(*ours.gate(hidden))
        want, got = hf(hidden), ours(hidden)
    assert torch.equal(got_idx, want_idx)
    torch.testing.assert_close(got_weight, want_weight, rtol=0, atol=1e-6)
    assert float(want.abs().max()) > 0.5  # the comparison is not between near-zero tensors
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_group_limit_changes_the_choice() -> None:
    """The group-limited cases really exercise group selection: plain top-k would choose differently."""
    for name in ("tiny", "v2_group_limited"):
        cfg = CONFIGS[name]
        ours = build_moe(cfg)
        load_hf_moe_state_dict(ours, hf_moe_block(cfg, seed=1).state_dict(), cfg)
        ungrouped = build_moe(cfg.replace(n_group=1, topk_group=1))
        ungrouped.load_state_dict(ours.state_dict())
        hidden = random_hidden(cfg, seed=2, shape=(3, 11))
        with torch.no_grad():
            assert not torch.equal(by_expert(*ours.gate(hidden))[0], by_expert(*ungrouped.gate(hidden))[0])


# bf16: both run their expert matmuls in bf16 with the same router values (ours loads transformers'
# bf16-rounded router weight into fp32, so the choice is identical). Measured: bit-identical to 4.57 (which
# also accumulates the weighted sum in fp32); up to 0.8% of the largest output from 5.x, which accumulates
# in bf16 (a few bf16 roundings of 2^-8 relative on O(1)-O(10) outputs). Bound: 3% of the largest output.
@pytest.mark.parametrize("name", ["tiny", "v2_lite_like"])
def test_bf16_within_bound(name: str) -> None:
    cfg = CONFIGS[name]
    hf = hf_moe_block(cfg, seed=1, dtype=torch.bfloat16)
    ours = build_moe(cfg).to(torch.bfloat16)
    load_hf_moe_state_dict(ours, hf.state_dict(), cfg)
    assert ours.gate.weight.dtype == torch.float32
    hidden = random_hidden(cfg, seed=2, shape=(3, 11)).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(by_expert(*ours.gate(hidden))[0], by_expert(*hf_moe_route(hf, hidden))[0])
        want, got = hf(hidden).float(), ours(hidden)
    assert got.dtype == torch.bfloat16
    scale = float(want.abs().max())
    torch.testing.assert_close(got.float(), want, rtol=0, atol=0.03 * scale)

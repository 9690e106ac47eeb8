"""The planner (dsv3-plan, torch-free) charges the score block of the prefill attention dsv3-mla runs: its
key-block constant is dsv3-mla's (dsv3-model depends on both, so the pin lives here)."""

from __future__ import annotations

from dsv3_mla import KEY_BLOCK
from dsv3_plan.scratch import PREFILL_KEY_BLOCK


def test_planner_key_block_is_the_attention_key_block() -> None:
    assert PREFILL_KEY_BLOCK == KEY_BLOCK

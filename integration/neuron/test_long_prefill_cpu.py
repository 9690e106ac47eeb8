"""A 4096-token context encoding at tp=2 (NxD CPU mode, torchrun, fp32) against transformers 4.57.

4096 tokens are four key blocks (`dsv3_mla.KEY_BLOCK` 1024), so the adapter's context encoding runs the
blocked (online-softmax) attention on every layer; the last token's logits depend on every position's
hidden state through the layers. Tolerance 1e-4 absolute as in `test_causal_lm_cpu.py` (the same fp32 math
regrouped: blocked softmax, tp partial sums, fused experts).
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import torch

from dsv3_mla import KEY_BLOCK

PROMPT_LEN = 4096
LOGIT_TOL = 1e-4


@pytest.mark.slow  # ~150 s on the shared 2-core machine (two ranks, 4096 tokens, plus transformers)
def test_tp2_4k_prefill_matches_transformers(tmp_path: Path) -> None:
    assert PROMPT_LEN > 2 * KEY_BLOCK  # the blocked path, several blocks
    cfg = harness.model_config("tiny")
    checkpoint = tmp_path / "tiny"
    hf = harness.save_hf_checkpoint(cfg, checkpoint)
    with torch.no_grad():
        expected_BV = hf(harness.long_prompt(cfg, PROMPT_LEN)).logits[:, -1]
    out_file = tmp_path / "rank0.pt"
    harness.torchrun("prefill_worker.py", 29541, "tiny", str(checkpoint), str(PROMPT_LEN), str(out_file))
    logits_BV = torch.load(out_file)["logits"]
    assert float(expected_BV.abs().max()) > 0.1  # non-trivial logits
    print(f"4K prefill tp=2: max |logits - transformers| = {float((logits_BV - expected_BV).abs().max()):.2e}")
    torch.testing.assert_close(logits_BV, expected_BV, atol=LOGIT_TOL, rtol=0)

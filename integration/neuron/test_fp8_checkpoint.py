"""An FP8 block-quantized checkpoint (DeepSeek's release format: e4m3 weights + fp32 `weight_scale_inv`
per 32x32 block in the tiny preset, partial edge blocks included) loads through
`convert_hf_to_neuron_state_dict` and reproduces transformers run on the dequantized weights.
Tolerance as test_causal_lm_cpu (1e-4, same fp32 math in another order)."""

from __future__ import annotations

from pathlib import Path

import harness
import torch


def test_fp8_checkpoint_matches_dequantized_transformers(tmp_path: Path) -> None:
    cfg = harness.model_config("tiny")
    hf = harness.save_fp8_checkpoint(cfg, tmp_path)
    ids_BS = harness.prompt(cfg)
    model = harness.build_neuron_model(tmp_path, tp_degree=1)
    with torch.no_grad():
        expected_BV = hf(ids_BS).logits[:, -1]
    torch.testing.assert_close(harness.prefill_last_logits(model, ids_BS), expected_BV, atol=1e-4, rtol=0)
    expected_BS = harness.hf_greedy_tokens(hf, ids_BS)
    tokens_BS = harness.greedy_tokens(model, ids_BS, torch.ones_like(ids_BS), harness.NEW_TOKENS)
    assert tokens_BS.tolist() == expected_BS.tolist()

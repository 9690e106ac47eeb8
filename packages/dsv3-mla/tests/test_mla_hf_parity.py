"""Parity with transformers' `DeepseekV3Attention`, weights copied: a batch of two prompts of different
lengths (17 and 11, right-padded) prefilled, then 8 decode steps, on both attention paths.

The reference runs each sequence alone through HF (batch 1, no padding, `DynamicCache`), so it
needs no padding convention at all; only real tokens are compared.
"""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS, DECODE_STEPS, PROMPT_LENGTHS, random_inputs, run_ours

from dsv3_config import ModelConfig
from dsv3_mla import MultiHeadLatentAttention
from dsv3_testing.hf_attention import HfAttentionRunner, hf_attention


def hf_outputs(attn: object, prompts: torch.Tensor, decode: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    results = []
    for row, length in enumerate(PROMPT_LENGTHS):
        runner = HfAttentionRunner(attn)
        prefill = runner.prefill(prompts[row : row + 1, :length])[0]
        steps = [runner.decode(decode[row : row + 1, step : step + 1])[0] for step in range(DECODE_STEPS)]
        results.append((prefill, torch.cat(steps)))
    return results


def max_diff(ours: tuple[torch.Tensor, torch.Tensor], ref: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    prefill, decode = ours
    diffs = []
    for row, length in enumerate(PROMPT_LENGTHS):
        diffs.append((prefill[row, :length].double() - ref[row][0].double()).abs().max())
        diffs.append((decode[row].double() - ref[row][1].double()).abs().max())
    return float(torch.stack(diffs).max())


def ours_from(cfg: ModelConfig, hf: torch.nn.Module, dtype: torch.dtype) -> MultiHeadLatentAttention:
    mla = MultiHeadLatentAttention(cfg)
    mla.load_state_dict(hf.state_dict(), strict=True)
    return mla.to(dtype).eval()


@pytest.mark.parametrize("path", ["absorbed", "expanded", "auto"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_matches_transformers(name: str, path: str) -> None:
    cfg = CONFIGS[name]
    hf = hf_attention(cfg, seed=1)
    prompts, decode = random_inputs(cfg, seed=2)
    ref = hf_outputs(hf, prompts, decode)
    prefill, steps, _ = run_ours(ours_from(cfg, hf, torch.float32), prompts, decode, path)  # type: ignore[arg-type]
    # Outputs are O(1); the two forms sum the same products in a different order (and the absorbed
    # one through the latent): fp32 rounding accumulates to ~1e-6. The bound is 1e-5.
    assert max_diff((prefill, steps), ref) <= 1e-5


@pytest.mark.parametrize("path", ["absorbed", "expanded"])
def test_bf16_within_bf16_rounding_of_the_fp32_reference(path: str) -> None:
    cfg = CONFIGS["tiny"]
    hf = hf_attention(cfg, seed=3)
    prompts, decode = random_inputs(cfg, seed=4)
    ref32 = hf_outputs(hf, prompts, decode)
    hf16 = hf_attention(cfg, seed=3, dtype=torch.bfloat16)
    ref16 = hf_outputs(hf16, prompts.bfloat16(), decode.bfloat16())
    ours16 = run_ours(ours_from(cfg, hf, torch.bfloat16), prompts.bfloat16(), decode.bfloat16(), path)  # type: ignore[arg-type]
    ours_error = max_diff(ours16[:2], ref32)
    hf_own_error = max(
        float((ref16[row][part].double() - ref32[row][part].double()).abs().max())
        for row in range(len(PROMPT_LENGTHS))
        for part in range(2)
    )
    scale = max(float(r[part].abs().max()) for r in ref32 for part in range(2))
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per operation). Through ~6 rounded
    # matmuls/norms on outputs of magnitude `scale`, 2^-5 * scale bounds the error; we also require
    # ours to be no worse than twice transformers' own bf16 error against the same fp32 reference.
    assert ours_error <= 2**-5 * scale
    assert ours_error <= 2 * hf_own_error


@pytest.mark.parametrize("name", ["tiny", "yarn_factor_40"])
def test_absorbed_equals_expanded(name: str) -> None:
    cfg = CONFIGS[name]
    torch.manual_seed(15)
    mla = MultiHeadLatentAttention(cfg).eval()
    prompts, decode = random_inputs(cfg, seed=16)
    absorbed = run_ours(mla, prompts, decode, "absorbed")
    expanded = run_ours(mla, prompts, decode, "expanded")
    # Same sums in a different association (through the latent): fp32 rounding, ~1e-7 on O(1) outputs.
    for row, length in enumerate(PROMPT_LENGTHS):
        torch.testing.assert_close(absorbed[0][row, :length], expanded[0][row, :length], rtol=0, atol=1e-5)
    torch.testing.assert_close(absorbed[1], expanded[1], rtol=0, atol=1e-5)
    assert torch.equal(absorbed[2].buffer_BTC, expanded[2].buffer_BTC)  # the cache does not depend on the path

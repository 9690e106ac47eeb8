"""`RMSNorm` against transformers' `DeepseekV3RMSNorm`: bit-identical in fp32 and bf16."""

from __future__ import annotations

import pytest
import torch

from dsv3_blocks import RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_transformers_bitwise(dtype: torch.dtype) -> None:
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RMSNorm

    torch.manual_seed(0)
    ref = DeepseekV3RMSNorm(48, eps=1e-6)
    ref.weight.data.uniform_(0.5, 1.5)
    ours = RMSNorm(48, eps=1e-6)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = (torch.randn(3, 5, 48) * 7).to(dtype)
    ref, ours = ref.to(dtype), ours.to(dtype)
    # Same operations in the same order (fp32 statistic, cast back, then the weight): exact.
    assert torch.equal(ours(x), ref(x))

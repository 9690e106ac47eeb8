"""`RMSNorm` with transformers' DeepSeek semantics: MLA's latent norms, the decoder layers' and the final norm.

The statistic is taken in fp32 and the normalized value is cast back to the input dtype *before*
the weight multiplies it (docs/numerics.md section 5), so bf16 results match transformers bit for bit.
Parameter name `weight`, as HF's `DeepseekV3RMSNorm`, so state dicts load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x32 = x.to(torch.float32)
        variance = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(variance + self.variance_epsilon)).to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"

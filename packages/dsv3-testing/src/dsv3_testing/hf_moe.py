"""transformers' DeepSeek MoE block (V3 or V2) as a reference, across 4.57 and 5.x.

4.57 names the V2 block `DeepseekV2MoE` and its gate returns `(idx, weight)`; 5.x names it
`DeepseekV2Moe`, fuses the experts in memory (`experts.gate_up_proj`) and its gates return
`(logits, weight, idx)`. `hf_moe_route` hides the difference. transformers is imported lazily.
"""

from __future__ import annotations

from typing import Any

import torch

from dsv3_config import ModelConfig
from dsv3_testing.hf_reference import hf_config, transformers_major

CORRECTION_BIAS_STD = 0.1


def hf_moe_block(cfg: ModelConfig, *, seed: int, dtype: torch.dtype = torch.float32) -> Any:
    """A randomly initialised HF MoE block in eval mode, with O(1) activations: every weight
    ~ N(0, 1/fan_in) (router logits ~ N(0, 1) for N(0, 1) inputs) and the correction bias ~ N(0, 0.1)
    (HF initialises it to zero, which would leave bias-driven selection untested)."""
    from transformers.models.deepseek_v2 import modeling_deepseek_v2
    from transformers.models.deepseek_v3 import modeling_deepseek_v3

    if cfg.model_type == "deepseek_v2":
        v2_name = "DeepseekV2Moe" if transformers_major() >= 5 else "DeepseekV2MoE"
        block_cls = getattr(modeling_deepseek_v2, v2_name)
    else:
        block_cls = modeling_deepseek_v3.DeepseekV3MoE
    torch.manual_seed(seed)
    block = block_cls(hf_config(cfg))
    with torch.no_grad():
        for name, tensor in [*block.named_parameters(), *block.named_buffers()]:
            if name.endswith("e_score_correction_bias"):
                tensor.normal_(0.0, CORRECTION_BIAS_STD)
            else:
                tensor.normal_(0.0, tensor.shape[-1] ** -0.5)
    return block.to(dtype).eval()


def hf_moe_route(block: Any, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(topk_idx, topk_weight)` of the block's gate for `hidden` [..., H], in either transformers version."""
    out = block.gate(hidden)
    if transformers_major() >= 5:  # (router_logits, weights, indices)
        return out[2], out[1]
    return out[0], out[1]

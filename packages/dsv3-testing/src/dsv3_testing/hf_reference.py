"""Build transformers' DeepSeek-V3 / V2 reference configs and modules from a dsv3 `ModelConfig`.

transformers is imported lazily so importing this module costs nothing until a reference is built.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from dsv3_config import ModelConfig


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def hf_config(cfg: ModelConfig, *, attn_implementation: str = "eager") -> Any:
    """`DeepseekV3Config` (or `DeepseekV2Config` for V2-family configs) with the same values."""
    from transformers import DeepseekV2Config, DeepseekV3Config

    data = cfg.to_hf()
    data.pop("quantization_config", None)  # HF would try to build an FP8 quantizer (GPU-only)
    if cfg.model_type == "kimi_k2":
        data["model_type"] = "deepseek_v3"
    config_cls = DeepseekV2Config if cfg.model_type == "deepseek_v2" else DeepseekV3Config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = config_cls(**data)
    hf._attn_implementation = attn_implementation
    return hf


def hf_causal_lm(cfg: ModelConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A randomly initialised HF `DeepseekV{2,3}ForCausalLM` in eval mode.

    Random init is re-drawn with a larger std for the router's correction bias so that tests
    exercise bias-dependent routing (HF initialises it to zero).
    """
    from transformers import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    model_cls = DeepseekV2ForCausalLM if cfg.model_type == "deepseek_v2" else DeepseekV3ForCausalLM
    model = model_cls(hf_config(cfg)).to(dtype).eval()
    with torch.no_grad():
        for name, param in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("e_score_correction_bias"):
                param.normal_(0.0, 0.1)
    return model


def hf5_v2_softmax_mscale(cfg: ModelConfig) -> float:
    """The factor by which transformers 5.x's V2 softmax scale differs from 4.57's (and dsv3's), else 1.0.

    transformers 5 (`yarn_apply_mscale` in `modeling_deepseek_v2.py`) multiplies V2's `qk_head_dim^-0.5` by
    `get_mscale(factor, mscale_all_dim)^2` under YaRN, as V3 and DeepSeek's own V2 code do; 4.57 does not
    (docs/numerics.md section 7). dsv3 follows 4.57, the version it pins, so V2 YaRN logits differ under 5.x.
    """
    from dsv3_config import yarn_get_mscale

    scaling = cfg.rope_scaling
    if cfg.model_type != "deepseek_v2" or scaling is None or not scaling.mscale_all_dim or transformers_major() < 5:
        return 1.0
    return yarn_get_mscale(scaling.factor, scaling.mscale_all_dim) ** 2

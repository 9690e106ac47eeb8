"""transformers' reference model for a checkpoint directory (`dsv3 verify`), imported lazily."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch


def load_hf_causal_lm(model_dir: Path, dtype: torch.dtype = torch.float32) -> Any:
    """`DeepseekV3ForCausalLM` / `DeepseekV2ForCausalLM` from `model_dir` (eager attention, eval mode).

    transformers cannot load FP8 checkpoints on a CPU (its FP8 quantizer needs a GPU, and it infers block
    sizes from shapes: docs/environment.md), so an FP8 checkpoint is first converted to fp32 in a temporary
    directory by `dsv3 convert`'s own code (exact per-block dequantization) and loaded from there.
    """
    try:
        import transformers
    except ImportError as err:
        raise ImportError("dsv3 verify needs transformers: pip install 'dsv3-model[hf]'") from err
    from dsv3_config import load_config

    cfg = load_config(model_dir)
    if cfg.quantization_config is not None:
        from dsv3_weights import convert_checkpoint

        with tempfile.TemporaryDirectory(prefix="dsv3-verify-") as work:
            converted = Path(work) / "fp32"
            convert_checkpoint(model_dir, converted, dtype=torch.float32, mtp="drop", progress=False)
            return load_hf_causal_lm(converted, dtype)
    v2 = cfg.model_type == "deepseek_v2"
    config_cls = transformers.DeepseekV2Config if v2 else transformers.DeepseekV3Config
    model_cls = transformers.DeepseekV2ForCausalLM if v2 else transformers.DeepseekV3ForCausalLM
    config = config_cls.from_pretrained(model_dir)
    # kimi_k2 is DeepSeek-V3's code. transformers 5 picks its checkpoint conversion (per-expert tensors into
    # its fused experts) by `config.model_type`; under "kimi_k2" it finds none and leaves the experts randomly
    # initialized, with only a load report. Reading it as deepseek_v3 loads every tensor.
    config.model_type = config_cls.model_type
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    return model_cls.from_pretrained(model_dir, config=config, attn_implementation="eager", **dtype_kw).eval()

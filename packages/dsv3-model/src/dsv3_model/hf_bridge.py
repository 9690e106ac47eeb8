"""transformers' reference model for a checkpoint directory (`dsv3 verify`), imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_hf_causal_lm(model_dir: Path, dtype: torch.dtype = torch.float32) -> Any:
    """`DeepseekV3ForCausalLM` / `DeepseekV2ForCausalLM` from `model_dir` (eager attention, eval mode).

    transformers cannot load FP8 checkpoints on a CPU (its FP8 quantizer needs a GPU); convert first
    with `dsv3 convert`.
    """
    try:
        import transformers
    except ImportError as err:
        raise ImportError("dsv3 verify needs transformers: pip install 'dsv3-model[hf]'") from err
    from dsv3_config import load_config

    cfg = load_config(model_dir)
    if cfg.quantization_config is not None:
        raise ValueError(f"{model_dir}: FP8 checkpoint; transformers cannot load it on CPU. Run `dsv3 convert` first.")
    model_cls = (
        transformers.DeepseekV2ForCausalLM if cfg.model_type == "deepseek_v2" else transformers.DeepseekV3ForCausalLM
    )
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    return model_cls.from_pretrained(model_dir, attn_implementation="eager", **dtype_kw).eval()

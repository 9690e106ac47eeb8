"""Building a `DeepseekForCausalLM` from a checkpoint directory (BF16 or FP8) or from a preset.

Streaming: the model is created on the meta device, its storage allocated once in the target dtype,
and then filled tensor by tensor (expert by expert) from dsv3-weights' memory-mapped reader, FP8
blocks dequantized one tensor at a time. Peak memory is the model's own size plus one source tensor,
never a second copy of the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dsv3_config import ModelConfig, load_config, preset
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.random_init import init_random_weights
from dsv3_model.state_dict_map import TensorSource, fill_model
from dsv3_weights.fp8 import dequantize_fp8_blocks
from dsv3_weights.layout import scale_name
from dsv3_weights.reader import CheckpointReader


def dequantizing_source(reader: CheckpointReader, cfg: ModelConfig) -> TensorSource:
    """`get(name)`: the tensor as stored, or `fp8 * weight_scale_inv` (fp32) where a scale exists."""
    block = None if cfg.quantization_config is None else cfg.quantization_config.weight_block_size

    def get(name: str) -> torch.Tensor:
        scale = scale_name(name)
        if scale not in reader:
            return reader.get(name)
        if block is None:
            raise ValueError(f"{reader.file_of(name)}: {name} has {scale} but config.json has no quantization_config")
        return dequantize_fp8_blocks(reader.get(name), reader.get(scale), block, torch.float32)

    return get


def has_mtp_weights(reader: CheckpointReader, cfg: ModelConfig) -> bool:
    prefix = f"model.layers.{cfg.num_hidden_layers}."
    names = reader.keys()
    return cfg.num_nextn_predict_layers > 0 and any(name.startswith(prefix) for name in names)


def load_causal_lm(model_dir: str | Path, *, dtype: torch.dtype, include_mtp: bool = True) -> DeepseekForCausalLM:
    """Load an HF-layout checkpoint. The MTP layer is loaded when the checkpoint has it and
    `include_mtp` is set; otherwise its tensors are left unread (never silently half-loaded)."""
    cfg = load_config(model_dir)
    with CheckpointReader(model_dir) as reader:
        with_mtp = include_mtp and has_mtp_weights(reader, cfg)
        with torch.device("meta"):
            model = DeepseekForCausalLM(cfg, include_mtp=with_mtp)
        model = model.to(dtype).to_empty(device="cpu").eval()
        if cfg.tie_word_embeddings:  # to_empty() gives each module its own storage: tie them again
            model.lm_head.weight = model.model.embed_tokens.weight
        fill_model(model, cfg, dequantizing_source(reader, cfg), set(reader.keys()))
    return model


def random_causal_lm(name: str, *, seed: int, dtype: torch.dtype) -> DeepseekForCausalLM:
    """A preset with transformers-style random weights (what `dsv3 generate` runs with no model)."""
    model = DeepseekForCausalLM(preset(name)).eval()
    init_random_weights(model, seed)
    return model.to(dtype)

"""Building a `DeepseekForCausalLM` from a checkpoint directory (BF16 or FP8) or from a preset.

Streaming: the model is created on the meta device, its storage allocated once in the target dtype,
and then filled tensor by tensor (expert by expert) from dsv3-weights' reader (`pread` into buffers it
owns, not a memory map: see `dsv3_weights.safetensors_io`), FP8 blocks dequantized one tensor at a time.
Peak memory is the model's own size plus one source tensor, never a second copy of the checkpoint.

Validation is the one every command applies (`dsv3_weights.validate.check_source`: a missing or non-directory
path, corrupt files, missing, unknown, mis-shaped or mis-typed tensors, bad scales, each a `CheckpointError`
naming the file and tensor), and every tensor is checked finite as it is read, so a damaged checkpoint fails
with that message instead of generating from NaN logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from dsv3_config import ModelConfig, preset
from dsv3_config.inventory import TensorDecl
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.cpu_kernels import KERNEL_CHOICES, KernelChoice, use_measured_kernels
from dsv3_model.fp8_resident import (
    fp8_resident_parts,
    quantization_block,
    resident_names,
    resident_source,
    scale_stacks,
)
from dsv3_model.parts import PLAIN_PARTS
from dsv3_model.random_init import init_random_weights
from dsv3_model.state_dict_map import TensorSource, fill_model
from dsv3_weights.errors import CheckpointError
from dsv3_weights.fp8 import dequantize_fp8_blocks
from dsv3_weights.layout import scale_name
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.validate import check_finite, check_source, has_mtp_tensors

WeightsMode = Literal["dequantized", "fp8-resident"]
WEIGHTS_MODES: tuple[WeightsMode, ...] = ("dequantized", "fp8-resident")


def dequantizing_source(reader: CheckpointReader, cfg: ModelConfig) -> TensorSource:
    """`get(name)`: the tensor as stored, or `fp8 * weight_scale_inv` (fp32) where a scale exists."""
    block = None if cfg.quantization_config is None else cfg.quantization_config.weight_block_size

    def get(name: str) -> torch.Tensor:
        scale = scale_name(name)
        if scale not in reader:
            return check_finite(reader.get(name), reader.file_of(name), name)
        if block is None:
            raise CheckpointError(
                f"{reader.file_of(name)}: tensor {name!r} has {scale} but config.json has no quantization_config"
            )
        values = dequantize_fp8_blocks(reader.get(name), reader.get(scale), block, torch.float32)
        return check_finite(values, reader.file_of(name), name, "dequantized")

    return get


def load_causal_lm(
    model_dir: str | Path,
    *,
    dtype: torch.dtype,
    include_mtp: bool = True,
    weights: WeightsMode = "dequantized",
    kernels: KernelChoice = "measured",
) -> DeepseekForCausalLM:
    """Load an HF-layout checkpoint. The MTP layer is loaded when the checkpoint has it and
    `include_mtp` is set; otherwise its tensors are left unread (never silently half-loaded).

    `weights`: "dequantized" holds every weight in `dtype`; "fp8-resident" keeps an FP8 checkpoint's
    quantized weights as stored and dequantizes them per matmul into `dtype` (`dsv3_model.fp8_resident`:
    about half the memory of bf16, the same logits as "dequantized").

    `kernels`: "measured" runs each layer's oneDNN-prepacked CPU form where it measured faster on this
    machine (eager inference only), "reference" keeps plain layers (`dsv3_model.cpu_kernels`)."""
    if weights not in WEIGHTS_MODES:
        raise ValueError(f"weights must be one of {WEIGHTS_MODES}, got {weights!r}")
    check_kernels(kernels)
    with CheckpointReader(model_dir) as reader:
        cfg = check_source(reader)
        with_mtp = include_mtp and has_mtp_tensors(reader, cfg)
        parts = fp8_resident_parts(reader, cfg) if weights == "fp8-resident" else PLAIN_PARTS
        with torch.device("meta"):
            model = DeepseekForCausalLM(cfg, include_mtp=with_mtp, parts=parts)
        model = model.to(dtype).to_empty(device="cpu").eval()
        if cfg.tie_word_embeddings:  # to_empty() gives each module its own storage: tie them again
            model.lm_head.weight = model.model.embed_tokens.weight
        available = set(reader.keys())
        source = dequantizing_source(reader, cfg)
        scales: tuple[TensorDecl, ...] = ()  # the stacked experts' scale grids, kept only when resident
        if weights == "fp8-resident":
            source = resident_source(reader, resident_names(model, cfg, available), source)
            scales = scale_stacks(cfg, quantization_block(reader, cfg))
        fill_model(model, cfg, source, available, scales)
    if kernels == "measured":
        use_measured_kernels(model)
    return model


def random_causal_lm(
    name: str, *, seed: int, dtype: torch.dtype, kernels: KernelChoice = "measured"
) -> DeepseekForCausalLM:
    """A preset with transformers-style random weights (what `dsv3 generate` runs with no model);
    `kernels` as in `load_causal_lm`."""
    check_kernels(kernels)
    model = DeepseekForCausalLM(preset(name)).eval()
    init_random_weights(model, seed)
    model = model.to(dtype)
    if kernels == "measured":
        use_measured_kernels(model)
    return model


def check_kernels(kernels: str) -> None:
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {KERNEL_CHOICES}, got {kernels!r}")

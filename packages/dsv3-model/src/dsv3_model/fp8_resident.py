"""Loading an FP8 checkpoint with its FP8 weights kept resident (`load_causal_lm(weights="fp8-resident")`,
`dsv3 generate|verify --weights fp8-resident`): about 1 byte per quantized parameter in memory.

Which parts: every projection and every routed-expert stack whose checkpoint tensors carry a
`weight_scale_inv` becomes `Fp8BlockLinear` / `Fp8GroupedExperts`, injected through `ModelParts` (the
linear-factory and experts seams), and is filled with the stored FP8 values and scales as read. The
untied `lm_head`, which checkpoints store unquantized (BF16), keeps its stored dtype (`StoredDtypeLinear`):
in an fp32 model it is half the bytes, and the largest tensor a decode step reads (the eager measured
kernels widen it once: `dsv3_model.cpu_kernels`). The rest is converted as a dequantized load does:
tensors stored unquantized, and `kv_b_proj`, whose weight matrix the absorbed attention form reads
directly (a small one: kv_lora_rank x heads x (nope + v)).
A model loaded either way computes the same logits bit for bit in fp32 (the products use the loader's
own dequantization), given the same expert computation: the FP8 experts run dsv3-moe's active-expert
loop, which the dequantized model runs wherever the one-time measurement picks it (`pinned("loop")`
forces it, for comparisons).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from dsv3_config import ModelConfig
from dsv3_config.inventory import ExpertStack, TensorDecl, expert_stacks
from dsv3_mla import MATRIX_READ_PROJECTIONS
from dsv3_model.fp8_experts import Fp8GroupedExperts
from dsv3_model.fp8_linear import Fp8BlockLinear
from dsv3_model.parts import ModelParts, plain_experts, plain_lm_head
from dsv3_model.state_dict_map import TensorSource, checkpoint_sources
from dsv3_model.stored_dtype import StoredDtypeLinear
from dsv3_weights.errors import CheckpointError
from dsv3_weights.fp8 import FP8_DTYPE
from dsv3_weights.layout import scale_name
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.validate import check_finite

LM_HEAD = "lm_head.weight"


def quantization_block(reader: CheckpointReader, cfg: ModelConfig) -> tuple[int, int]:
    """The checkpoint's FP8 block size, or a CheckpointError saying why FP8 weights cannot stay resident."""
    if cfg.quantization_config is None:
        raise CheckpointError(
            f"{reader.directory / 'config.json'}: no quantization_config, so no FP8 weights to keep resident"
        )
    return cfg.quantization_config.weight_block_size


def fp8_resident_parts(reader: CheckpointReader, cfg: ModelConfig) -> ModelParts:
    """Builders that make a part FP8-resident exactly where the checkpoint stores it quantized."""
    block = quantization_block(reader, cfg)

    def linear(prefix: str, name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        if name in MATRIX_READ_PROJECTIONS or scale_name(f"{prefix}{name}.weight") not in reader:
            return nn.Linear(in_features, out_features, bias=bias)
        return Fp8BlockLinear(in_features, out_features, bias, block=block)

    def experts(prefix: str, cfg: ModelConfig) -> nn.Module:
        names = [key for decl in expert_stacks(cfg) for key in _stack(decl.under(prefix)).all_source_keys()]
        if not all(scale_name(name) in reader for name in names):
            return plain_experts(prefix, cfg)
        return Fp8GroupedExperts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size, block=block)

    def lm_head(cfg: ModelConfig) -> nn.Module:
        if LM_HEAD not in reader or scale_name(LM_HEAD) in reader:  # absent (the load names it) or quantized
            return plain_lm_head(cfg)
        return StoredDtypeLinear(cfg.hidden_size, cfg.vocab_size, reader.dtype(LM_HEAD))

    return ModelParts(linear=linear, experts=experts, lm_head=lm_head)


def scale_stacks(cfg: ModelConfig, block: tuple[int, int]) -> tuple[TensorDecl, ...]:
    """The inventory's expert stacks, applied to the scale grids (`experts.gate_up_proj_scale_inv` from the
    per-expert `gate_proj.weight_scale_inv` and `up_proj.weight_scale_inv`, rows concatenated), for the
    checkpoint's quantization `block`. `state_dict_map.checkpoint_sources` reads their names and sources."""
    out = []
    for decl in expert_stacks(cfg):
        stack = _stack(decl)
        parts = len(stack.sources)
        experts, rows, cols = decl.shape
        grid = (experts, -(-rows // parts // block[0]) * parts, -(-cols // block[1]))
        scales = replace(stack, sources=tuple(scale_name(source) for source in stack.sources))
        out.append(replace(decl, name=f"{decl.name}_scale_inv", shape=grid, fp8=False, stacked_from=scales))
    return tuple(out)


def _stack(decl: TensorDecl) -> ExpertStack:
    assert decl.stacked_from is not None, decl.name
    return decl.stacked_from


def resident_names(model: nn.Module, cfg: ModelConfig, available: set[str]) -> set[str]:
    """The checkpoint names whose stored FP8 values the model keeps (the sources of its FP8 tensors)."""
    fp8_keys = [key for key, tensor in model.state_dict(keep_vars=True).items() if tensor.dtype == FP8_DTYPE]
    names: set[str] = set()
    for source in checkpoint_sources(cfg, fp8_keys, available).values():
        names.update([source] if isinstance(source, str) else source.all_source_keys())
    return names


def resident_source(reader: CheckpointReader, resident: set[str], dequantizing: TensorSource) -> TensorSource:
    """`get(name)`: the stored FP8 tensor (checked free of NaN) for a resident name, else `dequantizing(name)`."""

    def get(name: str) -> torch.Tensor:
        if name in resident:
            return check_finite(reader.get(name), reader.file_of(name), name)
        return dequantizing(name)

    return get

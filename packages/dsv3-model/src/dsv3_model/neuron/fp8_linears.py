"""The other linears kept in FP8 on the device (weights `fp8`): NxD's blockwise `QuantizedColumnParallel` /
`QuantizedRowParallel` in place of the `ColumnParallelLinear` / `RowParallelLinear` the layers build, for the
linears `dsv3_config.inventory.fp8_linears` names (attention `q_b_proj` or `q_proj`, `o_proj`, the latent
projections, the dense MLP, the shared experts); `kv_b_proj`, router, embeddings and lm_head stay as built.

As for the routed experts (`fp8_experts.py`) the swap is NxD's own `from_float` (what NxD's `convert` does to
every mapped layer not in `modules_to_not_convert`, `quantization/quantize.py:93-130`), done at build time so
CPU mode and the traced model hold the same modules. Each layer keeps its placement, bias, gather/reduce and
input settings; its weight is `[out, in]` FP8 (the checkpoint's orientation) with one fp32 scale per device
block of the rank's slice (`fp8_linear_block`), and its forward dequantizes the weight to the activation dtype
(`blockwise_scale_dequantize`) before the same matmul (docs/nxdi-contract.md section 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear, RowParallelLinear
from neuronx_distributed.quantization.quantization_layers import QuantizedColumnParallel, QuantizedRowParallel

from dsv3_config import ModelConfig
from dsv3_config.inventory import TensorDecl, swiglu_tensors
from dsv3_config.inventory.fp8_linears import fp8_linear_block, fp8_linear_on_device
from dsv3_model.neuron.fp8_experts import blockwise_q_config, from_float

WEIGHT_AXES = (0, 1)  # (out, in) of an NxD linear's [out, in] weight


def fp8_layer_names(cfg: ModelConfig, decls: tuple[TensorDecl, ...]) -> frozenset[str]:
    """The module names (`q_b_proj`, ...) among `decls` (one module's tensors) that weights `fp8` holds in FP8."""
    return frozenset(decl.name.removesuffix(".weight") for decl in decls if fp8_linear_on_device(cfg, decl))


@dataclass(frozen=True)
class Fp8Linears:
    """Which of one module's linears a linear factory builds FP8 (`names`), for `cfg`'s checkpoint blocks."""

    cfg: ModelConfig
    names: frozenset[str]

    @classmethod
    def of(cls, cfg: ModelConfig, decls: tuple[TensorDecl, ...]) -> Fp8Linears:
        return cls(cfg, fp8_layer_names(cfg, decls))

    def apply(self, name: str, layer: Any) -> Any:
        """`layer` as FP8 if `name` is one of `names`, else as built."""
        return fp8_linear(layer, self.cfg) if name in self.names else layer


def fp8_linear(layer: Any, cfg: ModelConfig) -> Any:
    """`layer` (an NxD `ColumnParallelLinear` or `RowParallelLinear`) as NxD's blockwise FP8 layer, same placement."""
    if getattr(layer, "pad", False) and layer.pad_size:
        raise ValueError(f"FP8 linear {type(layer).__name__}: padded to divide tp ({layer.pad_size}); not supported")
    column = isinstance(layer, ColumnParallelLinear)
    if not column and not isinstance(layer, RowParallelLinear):
        raise TypeError(f"FP8 linears replace NxD parallel linears, got {type(layer).__name__}")
    tp = layer.tensor_parallel_group.size()
    block = fp8_linear_block(cfg, (layer.output_size, layer.input_size), 0 if column else 1, tp)
    quantized_cls = QuantizedColumnParallel if column else QuantizedRowParallel
    return from_float(quantized_cls, layer, blockwise_q_config(block, WEIGHT_AXES))


def quantize_shared_experts(shared: Any, cfg: ModelConfig) -> None:
    """Swap NxD's `SharedExperts` gate/up/down for NxD's FP8 layers (the inventory's shared-expert SwiGLU)."""
    if shared.fused_gate_up_projection or shared.transpose_weights:
        raise ValueError(
            "FP8 shared experts need NeuronConfig fused_shared_experts and transpose_shared_experts_weights off"
        )
    decls = swiglu_tensors(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts, "shared_experts")
    for name in sorted(fp8_layer_names(cfg, decls)):
        setattr(shared, name, fp8_linear(getattr(shared, name), cfg))

"""Routed experts kept in FP8 on the device: NxD's `QuantizedExpertFusedColumnParallel` / `...RowParallel`
(blockwise symmetric, fp32 scales) in place of the BF16 expert layers NxDI's MoE module builds.

The swap is NxD's own (`quantization/quantize.py` `convert` calls `from_float` on exactly these classes,
`quantization_mappings.py`), done here at build time for the routed experts only, so CPU mode (NxDI's
`to_cpu()` never calls `convert`) and the traced model hold the same modules, and no other linear is touched.
Each stack gets its own block size (`dsv3_config.inventory.fp8_experts`): a checkpoint block refined to
divide each rank's slice. In the forward, NxD dequantizes the selected weights to the activation dtype
(`blockwise_scale_dequantize`) and runs the BF16 matmul (docs/nxdi-contract.md, section "FP8 experts").
`from_float` is the swap itself, shared with the other FP8 linears (`fp8_linears.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from neuronx_distributed.parallel_layers import parallel_state
from neuronx_distributed.quantization.quantization_config import (
    QuantizedDtype,
    get_default_blockwise_custom_qconfig_dict,
)
from neuronx_distributed.quantization.quantization_layers import (
    QuantizedExpertFusedColumnParallel,
    QuantizedExpertFusedRowParallel,
)

from dsv3_config.inventory.fp8_experts import Block, Fp8ExpertGrid

BLOCK_AXES = (1, 2)  # (in, out) of NxD's [E, in, out] stacks


def blockwise_q_config(block: Block, axes: tuple[int, ...]) -> dict[str, Any]:
    """NxD's blockwise FP8 (e4m3, fp32 scales) q_config with `block` elements along `axes` of the weight."""
    q_config = dict(get_default_blockwise_custom_qconfig_dict())
    q_config.update(quantized_dtype=QuantizedDtype.F8E4M3, block_axis=list(axes), block_size=list(block))
    return q_config


def quantize_routed_experts(moe: Any, grid: Fp8ExpertGrid) -> None:
    """Swap `moe.expert_mlps.mlp_op`'s `gate_up_proj` / `down_proj` for NxD's FP8 blockwise expert layers."""
    mlp_op = moe.expert_mlps.mlp_op  # NxD's `Experts` (untyped NxD modules: Any)
    moe_tp = mlp_op.gate_up_proj.tensor_parallel_group.size()
    per_rank = int(mlp_op.down_proj.input_size_per_partition)
    if grid.down[0] > per_rank or per_rank % grid.down[0]:
        raise ValueError(
            f"FP8 expert grid {grid} does not divide the {per_rank} intermediate columns per rank (moe_tp {moe_tp})"
        )
    gate_up, down = blockwise_q_config(grid.gate_up, BLOCK_AXES), blockwise_q_config(grid.down, BLOCK_AXES)
    mlp_op.gate_up_proj = from_float(QuantizedExpertFusedColumnParallel, mlp_op.gate_up_proj, gate_up)
    mlp_op.down_proj = from_float(QuantizedExpertFusedRowParallel, mlp_op.down_proj, down)


def from_float(quantized_cls: Any, layer: Any, q_config: dict[str, Any]) -> Any:
    """NxD's `quantized_cls.from_float(layer, q_config)` (what NxD's `convert` calls), its parameters shaped for
    the checkpoint's values (`_parameters_from_checkpoint`) and without a second copy of its weight."""
    with _parameters_from_checkpoint():
        quantized = quantized_cls.from_float(layer, q_config)
    # AOT mode hands the weight itself back as the "master" copy (`parallel_layers/layers.py:139-140`), which
    # would put it in the state dict twice; without a master copy (keep_master_weight off) it is None.
    quantized.master_weight = None
    return quantized


@contextmanager
def _parameters_from_checkpoint() -> Iterator[None]:
    """NxD's AOT mode while the layers are built: their parameters get shapes and parallel attributes only.

    What ModelBuilder does when it traces (NxD `trace/model_builder.py:560-596`). Without it, CPU mode first
    builds a "master" copy of each FP8 weight for a deterministic init, and for a quantized dtype NxD sizes it
    from the per-rank last dim (`parallel_layers/layers.py:142-149`), so the fused `gate_up_proj` (partitioned on
    its last dim, stride 2) splits into too few pieces for moe_tp > 2 and `torch.cat` gets an empty list
    (`:96-106`). The values are never used: every weight is loaded from the checkpoint afterwards.
    """
    previous = parallel_state.get_aot_mode()
    parallel_state.set_aot_mode(True)
    try:
        yield
    finally:
        parallel_state.set_aot_mode(previous)

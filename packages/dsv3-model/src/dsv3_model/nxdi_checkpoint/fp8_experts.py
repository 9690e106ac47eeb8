"""The checkpoint's FP8 routed experts in the layout NxD's quantized expert layers hold on device.

Neuron's FP8 e4m3 saturates at +-240 (IEEE-style: exponent 15 is inf/NaN), the checkpoint's OCP `e4m3fn` at
+-448, and NxDI compiles `float8_e4m3fn` as Neuron's e4m3 (`--experimental-unsafe-fp8e4m3fn-as-fp8e4m3`;
NxD `quantization/README_rescaling_fp8_for_neuron.md:1-7`). Every value with |q| <= 240 has the same bits in
both formats, so the weights are moved into that range on purpose: **halved**, with the scales doubled
(`W = q * s = (q / 2) * (2 s)`). NxD's README divides by 448 / 240 instead (`:18`, `:41-46`), which re-rounds
every value; halving only decrements the exponent, so it is exact for |q| >= 2^-5 and rounds (to nearest
even) only the e4m3fn values below that, which become subnormal (step 2^-9): each halved value moves by at
most 2^-10, so each weight by at most 2^-10 * 2 s = 2^-9 s (s its block's `weight_scale_inv`), at most
2^-9 / 448 = 4.4e-6 of its block's largest weight.
Clamping to +-240 (what the GLM-5.2 contrib port does) would instead cut every |q| > 240 by up to 46%.
The largest stored value is 224.

The other FP8 linears (weight format `fp8`, `dsv3_config.inventory.fp8_linears`) are halved the same way and
keep the checkpoint's `[out, in]` orientation; their scale grid is the checkpoint's sampled once per device
block, doubled (`linear_scales`).

Stacks are NxD's transposes (`[E, in, out]`, gate then up in `gate_up_proj`) of the per-expert HF `[out, in]`
matrices, and each scale is the checkpoint's `weight_scale_inv` block the device block lies in, times 2
(`dsv3_config.inventory.fp8_experts` has the grid).
"""

from __future__ import annotations

import torch

from dsv3_config.inventory.fp8_experts import Block

FP8 = torch.float8_e4m3fn
RESCALE = 2.0  # q_device = q / RESCALE, scale_device = scale_inv * RESCALE
NEURON_FP8_MAX = 240.0


def rescale_for_neuron(values_f32: torch.Tensor) -> torch.Tensor:
    """e4m3fn values (held exactly in fp32) halved into Neuron's e4m3 range, as `float8_e4m3fn` bits."""
    return (values_f32 / RESCALE).to(FP8)


def expert_scales(
    scale_invs: list[torch.Tensor],
    device_block: Block,
    checkpoint_block: Block,
    out_per_source: int,
    in_blocks: tuple[int, int],
    out_blocks: tuple[int, int],
) -> torch.Tensor:
    """Device scales `[in_blocks, out_blocks]` (a box of one expert's `[in / b_in, out / b_out]` grid).

    `scale_invs` are the expert's HF sources' `weight_scale_inv` grids (`[ceil(out / rows), ceil(in / cols)]`,
    one per source concatenated along out: gate then up, or down alone), `out_per_source` the out size of one.
    """
    b_in, b_out = device_block
    rows, cols = checkpoint_block
    out_idx = torch.arange(*out_blocks)
    per_source = out_per_source // b_out
    source, within = out_idx // per_source, out_idx % per_source
    checkpoint_row = within * b_out // rows
    checkpoint_col = _covering(in_blocks, b_in, cols)
    grids = torch.stack([grid.float() for grid in scale_invs])
    return grids[source[None, :], checkpoint_row[None, :], checkpoint_col[:, None]] * RESCALE


def linear_scales(
    scale_inv: torch.Tensor,
    device_block: Block,
    checkpoint_block: Block,
    out_blocks: tuple[int, int],
    in_blocks: tuple[int, int],
) -> torch.Tensor:
    """Device scales `[out_blocks, in_blocks]` (a box of an `[out, in]` linear's `[out / b_out, in / b_in]` grid,
    NxD's blockwise `Quantized*Parallel` layout) from the linear's `weight_scale_inv` grid (same orientation)."""
    (b_out, b_in), (rows, cols) = device_block, checkpoint_block
    checkpoint_row, checkpoint_col = _covering(out_blocks, b_out, rows), _covering(in_blocks, b_in, cols)
    return scale_inv.float()[checkpoint_row[:, None], checkpoint_col[None, :]] * RESCALE


def _covering(blocks: tuple[int, int], device: int, checkpoint: int) -> torch.Tensor:
    """The checkpoint block (along one dim) each device block `[start, end)` lies in (`device` divides it)."""
    return torch.arange(*blocks) * device // checkpoint

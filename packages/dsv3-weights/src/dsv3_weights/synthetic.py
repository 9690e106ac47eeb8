"""`make_checkpoint`: random weights in exactly the published layout, for tests, demos and benchmarks.

Real checkpoints cannot be downloaded here, so this writes what DeepSeek's release looks like: every
tensor of `checkpoint_layout(cfg)` (MTP layer included), FP8 e4m3 weights with an fp32
`weight_scale_inv` of `amax / 448` per block where the release has them, sharded with an index, and a
`config.json` carrying `quantization_config` only when FP8. Each tensor is drawn from its own generator
(seeded by `seed` and its name) a block of rows at a time, so the result is deterministic and writing
a multi-GB checkpoint needs the memory of one chunk.

Speed: drawing and quantizing Gaussians runs at ~45 M values/s here, too slow for the multi-GB
benchmark inputs. FP8 weights are therefore assembled from a pool of 64 blocks, each a Gaussian block
quantized the DeepSeek way (scale = amax / 448); every block of a weight is a random pool block with
that block's scale times the weight's init std. Dequantized, every full block is Gaussian with
`amax = 448 * scale_inv`, exactly as in the release.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import torch

from dsv3_config import Fp8BlockQuantization, ModelConfig
from dsv3_weights.fp8 import chunk_rows, quantize_fp8_blocks, scale_grid
from dsv3_weights.layout import TensorSpec, checkpoint_layout, stored_tensors
from dsv3_weights.progress import Progress
from dsv3_weights.writer import DEFAULT_MAX_SHARD_BYTES, OutputTensor, ShardedOutput, write_shard


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63))


def _init_std(spec: TensorSpec) -> float:
    """Norm weights near 1, router bias small, matrices ~ 1/sqrt(fan_in) so activations stay O(1)."""
    if len(spec.shape) == 1:
        return 0.1
    return spec.shape[1] ** -0.5


class _BlockPool:
    """`size` quantized Gaussian blocks and their scales, from which FP8 weights are tiled."""

    def __init__(self, seed: int, block: tuple[int, int], size: int = 64) -> None:
        gen = _generator(seed, "block pool")
        values = torch.randn((size * block[0], block[1]), generator=gen)
        fp8, scale = quantize_fp8_blocks(values, block)  # scale: [size, 1]
        self.block = block
        self.blocks_u8 = fp8.view(torch.uint8).view(size, block[0], block[1])
        self.scales = scale.flatten()

    def weight_rows(self, rows: int, cols: int, std: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp8 [rows, cols], scale_inv grid) with every block a random pool block."""
        grid = scale_grid((rows, cols), self.block)
        pick = torch.randint(0, len(self.scales), grid, generator=gen)
        tiles = self.blocks_u8[pick].permute(0, 2, 1, 3).reshape(grid[0] * self.block[0], grid[1] * self.block[1])
        return tiles[:rows, :cols].contiguous().view(torch.float8_e4m3fn), self.scales[pick] * std


class _RandomTensors:
    """Row chunks of each tensor; FP8 weights' scales are kept for when the plan reaches them."""

    def __init__(self, layout: dict[str, TensorSpec], seed: int, block: tuple[int, int] | None) -> None:
        self.layout = layout
        self.seed = seed
        self.pool = _BlockPool(seed, block) if block else None
        self.scales: dict[str, torch.Tensor] = {}

    def __call__(self, tensor: OutputTensor) -> Iterator[torch.Tensor]:
        if tensor.name in self.scales:  # a weight_scale_inv: its weight came earlier in the plan
            yield self.scales.pop(tensor.name)
            return
        spec = self.layout[tensor.name]
        gen = _generator(self.seed, spec.name)
        std = _init_std(spec)
        if len(spec.shape) == 1:
            values = torch.randn(spec.shape, generator=gen) * std
            yield (values + 1.0 if spec.name.endswith("norm.weight") else values).to(tensor.dtype)
            return
        pool = self.pool if spec.fp8 else None
        step = chunk_rows(spec.shape[1], pool.block[0] if pool else 1)
        scale_rows: list[torch.Tensor] = []
        for r0 in range(0, spec.shape[0], step):
            rows = min(step, spec.shape[0] - r0)
            if pool is not None:
                quantized, scale = pool.weight_rows(rows, spec.shape[1], std, gen)
                scale_rows.append(scale)
                yield quantized
            else:
                yield (torch.randn((rows, spec.shape[1]), generator=gen) * std).to(tensor.dtype)
        if scale_rows:
            self.scales[spec.scale_name] = torch.cat(scale_rows)


def make_checkpoint(
    dst: str | Path,
    cfg: ModelConfig,
    *,
    fp8: bool,
    seed: int,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
) -> Path:
    """Write a random checkpoint of `cfg` to `dst` (created; must be empty or absent); returns `dst`."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if any(dst.iterdir()):
        raise FileExistsError(f"{dst}: make-checkpoint needs an empty or absent directory")
    quant = (cfg.quantization_config or Fp8BlockQuantization(quant_method="fp8")) if fp8 else None
    block = quant.weight_block_size if quant else None
    layout = checkpoint_layout(cfg)
    stored = stored_tensors(layout, quantized_block=block)
    tensors = [OutputTensor(name, shape, dtype) for name, (shape, dtype) in stored.items()]
    output = ShardedOutput.plan(dst, tensors, max_shard_bytes)
    source = _RandomTensors(layout, seed, block)
    with Progress("make-checkpoint", sum(t.nbytes for t in tensors), enabled=progress) as bar:
        for path, shard in output.files():
            write_shard(path, shard, source, on_write=bar.wrote)
    output.finish(cfg.replace(quantization_config=quant).to_hf())
    return dst

"""`write_per_rank_files` (`dsv3 shard`): an HF checkpoint -> NxDI's pre-sharded per-rank files, streaming.

NxDI with `save_sharded_checkpoint=True` writes, and at load reads, `COMPILED/weights/tp{rank}_sharded_checkpoint
.safetensors` (NxDI `models/application_base.py:240-254`, `:389-399`): one safetensors file per tensor-parallel
rank, no metadata, holding that rank's slice of every converted tensor under the converted key (no `model.`
prefix), the `SPMDRank` vectors included, floats in the NxDI dtype (NxD `trace/model_builder.py:801-860`,
`:994-1000`). This writes the same files without NxD: the conversion is `state_dict.convert_tensor` (the one
NxDI's in-memory path uses), the slicing `nxdi_shard_plan`, and each rank file goes through
`dsv3_weights.writer.write_shard` (`.tmp` + rename, so an interrupted run never leaves a complete-looking file).

The source is validated exactly as `dsv3 convert` validates it (`dsv3_weights.validate.check_source`: layout,
dtypes, scale grids, finite scales) before anything is written, and every value read is checked finite. The
destination is `dsv3_weights.destination`'s: `weights/` is locked while written, its manifest records the job
(source, tp, ep, dtype) and each finished rank file's CRC-32, so a killed run resumes where it stopped and a
`weights/` holding another job's files (say `--tp 4` when this is `--tp 2`) is refused, never mixed.

Memory is bounded by one chunk, whatever the checkpoint size: ranks are written one after another, and each
tensor of a rank is produced a block of rows at a time (about `CHUNK_BYTES` of fp32 at full width; one expert
at a time for the expert stacks), from only the source rows that block needs (`CheckpointReader` reads rows,
`dequantize_fp8_slice` dequantizes only the FP8 blocks touched). The cost is I/O: a tensor split along a
column dimension is read once per rank.

Routed experts of an FP8 checkpoint stay FP8 by default (`weights`, the adapter's `dsv3_weights`, format
`fp8-experts`): each rank file holds its slice of the halved FP8 stacks and of their fp32 scale grids
(`fp8_experts.py`), read raw from the checkpoint's rows and `weight_scale_inv` grids, never dequantized. Format
`fp8` keeps the other linears `dsv3_config.inventory.fp8_linears` names FP8 the same way (weights halved, their
scale grids sampled per device block).

With expert parallelism (`ep_degree` > 1, NeuronConfig `moe_ep_degree`, `moe_tp_degree = tp / ep`) each rank
file holds only its `E / ep` experts (read expert by expert, nothing else of the stacks) and the
`local_expert_indices` row naming them, placed as `shard_plan.NxdiRanks` describes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from dsv3_config import ModelConfig
from dsv3_config.inventory.fp8_experts import Fp8ExpertGrid, fp8_expert_grid
from dsv3_config.inventory.placements import DEVICE_WEIGHT_FORMATS, FP8_EXPERT_FORMATS, default_weight_format
from dsv3_model.nxdi_checkpoint.key_map import HF_MODEL_PREFIX
from dsv3_model.nxdi_checkpoint.neuron_tensors import (
    SCALE_SUFFIX,
    NeuronTarget,
    NeuronTensor,
    fp8_block,
    neuron_tensors,
)
from dsv3_model.nxdi_checkpoint.shard_plan import NxdiRanks, nxdi_shard_plan
from dsv3_model.nxdi_checkpoint.state_dict import Box, SourceRead, check_fp8_sources, convert_tensor
from dsv3_weights.destination import Manifest, job_fingerprint, locked
from dsv3_weights.fp8 import CHUNK_BYTES, dequantize_fp8_slice
from dsv3_weights.progress import Progress, Summary
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.sharding import dim_ranges
from dsv3_weights.validate import check_finite, check_source
from dsv3_weights.writer import OutputTensor, write_shard

WEIGHTS_DIR = "weights"
MANIFEST_NAME = "dsv3-shard-manifest.json"
Ranges = list[list[tuple[int, int]]]  # per dim, the [start, end) pieces a rank keeps


def rank_file_name(tp_rank: int) -> str:
    """NxDI's name for rank `tp_rank`'s file under `COMPILED/weights/`."""
    return f"tp{tp_rank}_sharded_checkpoint.safetensors"


def write_per_rank_files(
    src: str | Path,
    dst: str | Path,
    *,
    tp_degree: int,
    ep_degree: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    weights: str | None = None,
    progress: bool = False,
) -> Summary:
    """Write `dst/weights/tp{r}_sharded_checkpoint.safetensors` for r < tp_degree (`rank_file_name`).

    `dst` is the NxDI compiled-model directory (`model.pt`, `neuron_config.json` live next to `weights/`);
    `dtype` is the NeuronConfig `torch_dtype` the model is compiled with, `weights` the model's `dsv3_weights`
    (`DEVICE_WEIGHT_FORMATS`; None: the default for the checkpoint). Returns the job
    summary (bytes read and written, time, peak RSS); `progress` shows a bar on a terminal.
    """
    ranks = NxdiRanks(tp_degree, ep_degree)
    out_dir = Path(dst) / WEIGHTS_DIR
    with CheckpointReader(src) as reader:
        cfg = check_source(reader)
        hf_key = {key.removeprefix(HF_MODEL_PREFIX): key for key in reader}
        weights = default_weight_format(cfg) if weights is None else weights
        grid = _expert_grid(cfg, weights, ranks.moe_tp)
        fp8_linears = weights == "fp8"
        target = NeuronTarget(dtype, tp_degree, tp_degree, ep_degree, grid, fp8_linears)
        tensors = neuron_tensors(cfg, target)  # shapes checked
        check_fp8_sources(tensors, {key.removeprefix(HF_MODEL_PREFIX): reader.dtype(key) for key in reader}, str(src))
        plan = nxdi_shard_plan(cfg, ep_degree, grid, fp8_linears)
        by_name = {tensor.name: tensor for tensor in tensors}
        rank_ranges = [
            {t.name: dim_ranges(t.shape, plan[t.name], ranks.coordinate(t.name, rank)) for t in tensors}
            for rank in range(tp_degree)
        ]
        rank_outputs = [[OutputTensor(t.name, _range_shape(r[t.name]), t.dtype) for t in tensors] for r in rank_ranges]
        fingerprint = job_fingerprint(reader, tp_degree=tp_degree, ep_degree=ep_degree, dtype=dtype, experts=weights)
        total = sum(output.nbytes for outputs in rank_outputs for output in outputs)
        with locked(out_dir, "shard"), Progress("shard", total, enabled=progress) as bar:
            manifest = Manifest(out_dir, MANIFEST_NAME, fingerprint, "shard")
            read = _reader_source(reader, cfg, hf_key, dtype, bar)
            for rank, (ranges, outputs) in enumerate(zip(rank_ranges, rank_outputs, strict=True)):
                path = out_dir / rank_file_name(rank)
                kept = manifest.intact(path)
                if kept is not None:
                    bar.wrote(kept)
                    continue
                chunks = partial(_tensor_chunks, by_name, ranges, read)
                manifest.record(path.name, *write_shard(path, outputs, chunks, on_write=bar.wrote))
    assert bar.summary is not None
    return bar.summary


def _expert_grid(cfg: ModelConfig, weights: str, moe_tp: int) -> Fp8ExpertGrid | None:
    if weights not in DEVICE_WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {', '.join(DEVICE_WEIGHT_FORMATS)}, got {weights!r}")
    return fp8_expert_grid(cfg, moe_tp) if weights in FP8_EXPERT_FORMATS else None


def _range_shape(ranges: Ranges) -> tuple[int, ...]:
    return tuple(sum(end - start for start, end in dim) for dim in ranges)


def _reader_source(
    reader: CheckpointReader, cfg: ModelConfig, hf_key: dict[str, str], dtype: torch.dtype, bar: Progress
) -> SourceRead:
    """Slices of the checkpoint's tensors by converted-style key, FP8 ones dequantized into `dtype`; every
    byte read is counted on `bar`."""

    def get_slice(key: str, slices: tuple[slice, ...]) -> torch.Tensor:
        values = reader.get_slice(key, slices)
        bar.read(values.nbytes)
        return values

    def read(name: str, slices: tuple[slice, ...], *, raw: bool = False) -> torch.Tensor:
        key = hf_key[name]
        scale = key + SCALE_SUFFIX
        if raw or scale not in reader:
            return check_finite(get_slice(key, slices), reader.file_of(key), key)
        shape = reader.shape(key)
        if len(shape) != 2 or len(slices) != 2:
            raise ValueError(f"{key}: FP8 weight of shape {shape} read with {len(slices)} slices")
        read_weight, read_scale = partial(get_slice, key), partial(get_slice, scale)
        block = fp8_block(cfg, scale)
        values = dequantize_fp8_slice(read_weight, read_scale, (shape[0], shape[1]), block, *slices, out_dtype=dtype)
        return check_finite(values, reader.file_of(key), key, f"dequantized {dtype}")

    return read


def _tensor_chunks(
    by_name: dict[str, NeuronTensor], ranges: dict[str, Ranges], read: SourceRead, output: OutputTensor
) -> Iterator[torch.Tensor]:
    return _row_chunks(by_name[output.name], ranges[output.name], read)


def _row_chunks(tensor: NeuronTensor, ranges: Ranges, read: SourceRead) -> Iterator[torch.Tensor]:
    """A rank's slice of `tensor` as consecutive dim-0 blocks of about `CHUNK_BYTES` (fp32, full width)."""
    row_bytes = 4 * math.prod(tensor.shape[1:])
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    for start, end in ranges[0]:
        for r0 in range(start, end, step):
            yield _box_values(tensor, [[(r0, min(r0 + step, end))], *ranges[1:]], read, ())


def _box_values(tensor: NeuronTensor, ranges: Ranges, read: SourceRead, fixed: Box) -> torch.Tensor:
    """The rank's pieces of every dim (several per dim where the plan has `parts` > 1), concatenated."""
    dim = len(fixed)
    if dim == len(ranges):
        return convert_tensor(tensor, fixed, read)
    return torch.cat([_box_values(tensor, ranges, read, (*fixed, piece)) for piece in ranges[dim]], dim=dim)

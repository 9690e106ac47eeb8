"""`convert_checkpoint`: FP8 -> BF16 (or fp16/fp32) in the HF layout, streaming and restartable.

Memory: one output shard is written at a time, tensor by tensor, each tensor a block of rows at a time
(`fp8.dequantize_fp8_blocks` on row chunks), so peak memory is a few chunks whatever the model size.

Restart: the output plan (which tensor goes into which shard) is a pure function of the source and the
options, fingerprinted in `dsv3-convert-manifest.json`. A shard is written as `.tmp`, fsync'ed, renamed,
then recorded in the manifest with its CRC-32 (the manifest itself is replaced atomically). A rerun
after a kill at any moment keeps the shards whose checksum matches the manifest, redoes the rest, and
only then writes the index and, last, `config.json` (without `quantization_config`): a directory with a
`config.json` is complete, one without is not. The directory is locked while a run writes it and a
directory holding anything but this conversion is refused (`destination`). A write error (disk full)
removes the temporary file and stops the run with the error naming it; a rerun with room resumes.

Validation: the source is checked as every command checks it (`validate.check_source`: layout, dtypes,
scale grids, finite scales) before anything is written, and every chunk written is checked finite.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import torch

from dsv3_config import ModelConfig
from dsv3_weights.destination import LOCK_NAME, Manifest, job_fingerprint, locked
from dsv3_weights.fp8 import CHUNK_BYTES, chunk_rows, dequantize_fp8_chunks
from dsv3_weights.layout import checkpoint_layout, scale_name
from dsv3_weights.progress import Progress, Summary
from dsv3_weights.reader import INDEX_NAME, CheckpointReader
from dsv3_weights.validate import check_finite, check_source, has_mtp_tensors
from dsv3_weights.writer import DEFAULT_MAX_SHARD_BYTES, TMP_SUFFIX, OutputTensor, ShardedOutput, write_shard

MANIFEST_NAME = "dsv3-convert-manifest.json"
MtpPolicy = Literal["keep", "drop"]
OUT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@dataclass(frozen=True)
class _ShardJob:
    src: Path
    path: Path
    tensors: tuple[OutputTensor, ...]
    fp8_names: frozenset[str]  # tensors stored FP8 in the source
    block: tuple[int, int] | None


def _chunks(reader: CheckpointReader, job: _ShardJob, tensor: OutputTensor) -> Iterator[torch.Tensor]:
    """The output tensor's row chunks, each refused if it holds NaN/Inf (from the source data, or from
    dequantizing it into the output dtype)."""
    file = reader.file_of(tensor.name)
    if tensor.name not in job.fp8_names or job.block is None:
        rows = tensor.shape[0] if tensor.shape else 1
        step = max(1, CHUNK_BYTES // max(1, reader.nbytes(tensor.name) // max(rows, 1)))
        for r0 in range(0, rows, step):
            values = reader.get_rows(tensor.name, r0, min(rows, r0 + step)).to(tensor.dtype)
            yield check_finite(values, file, tensor.name)
        return
    scale = reader.get(scale_name(tensor.name))  # checked finite by check_source
    block_rows = job.block[0]
    step = chunk_rows(tensor.shape[1], block_rows)
    for r0 in range(0, tensor.shape[0], step):
        r1 = min(tensor.shape[0], r0 + step)
        weight = reader.get_rows(tensor.name, r0, r1)
        # r0 is on a block boundary, so these rows and their scale rows form a complete block grid
        for chunk in dequantize_fp8_chunks(
            weight, scale[r0 // block_rows : -(-r1 // block_rows)], job.block, tensor.dtype
        ):
            yield check_finite(chunk, file, tensor.name, f"dequantized {tensor.dtype}")


def _run_shard(job: _ShardJob, on_write: Callable[[int], None] | None = None) -> tuple[str, str, int, int]:
    """Write one output shard; returns (file name, crc32, bytes written, bytes read)."""
    with CheckpointReader(job.src) as reader:
        digest, written = write_shard(job.path, job.tensors, lambda t: _chunks(reader, job, t), on_write)
        read = sum(reader.nbytes(t.name) for t in job.tensors)
        read += sum(reader.nbytes(scale_name(t.name)) for t in job.tensors if t.name in job.fp8_names and job.block)
    return job.path.name, digest, written, read


def _plan(
    reader: CheckpointReader, cfg: ModelConfig, dtype: torch.dtype, mtp: MtpPolicy
) -> tuple[list[OutputTensor], frozenset[str]]:
    fp8_names = {s.name for s in checkpoint_layout(cfg).values() if s.fp8 and cfg.quantization_config is not None}
    include_mtp = mtp == "keep" and has_mtp_tensors(reader, cfg)
    tensors = [
        OutputTensor(spec.name, spec.shape, dtype if spec.fp8 else reader.dtype(spec.name))
        for spec in checkpoint_layout(cfg, include_mtp=include_mtp).values()
    ]
    return tensors, frozenset(fp8_names)


def _run_jobs(jobs: Sequence[_ShardJob], workers: int, manifest: Manifest, bar: Progress) -> None:
    def finished(result: tuple[str, str, int, int], counted: bool) -> None:
        name, digest, written, read = result
        manifest.record(name, digest, written)
        bar.read(read)
        if not counted:
            bar.wrote(written)

    if workers <= 1:  # progress per chunk
        for job in jobs:
            finished(_run_shard(job, bar.wrote), counted=True)
        return
    # Each worker gets its share of the intra-op threads: N workers each running all cores' worth of
    # OpenMP threads oversubscribe the machine (2 workers on 2 cores measured 10x slower: 59 s vs 6 s for 1 GB).
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        pending = {pool.submit(_run_shard, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                finished(future.result(), counted=False)


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    mtp: MtpPolicy = "keep",
    workers: int = 1,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
) -> Summary:
    """Convert the checkpoint at `src` into an unquantized `dtype` checkpoint at `dst` (resuming a killed run)."""
    src, dst = Path(src), Path(dst)
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(map(str, _DTYPE_NAMES))}, got {dtype}")
    with CheckpointReader(src) as reader:
        cfg = check_source(reader)
        tensors, fp8_names = _plan(reader, cfg, dtype, mtp)
        fingerprint = job_fingerprint(reader, dtype=dtype, mtp=mtp, max_shard_bytes=max_shard_bytes)
    output = ShardedOutput.plan(dst, tensors, max_shard_bytes)
    block = cfg.quantization_config.weight_block_size if cfg.quantization_config else None
    with locked(dst, "conversion"):
        manifest = Manifest(dst, MANIFEST_NAME, fingerprint, "conversion")
        with Progress("convert", sum(t.nbytes for t in tensors), enabled=progress) as bar:
            jobs = []
            for path, shard in output.files():
                kept = manifest.intact(path)
                if kept is not None:
                    bar.wrote(kept)
                else:
                    jobs.append(_ShardJob(src, path, tuple(shard), fp8_names, block))
            _run_jobs(jobs, workers, manifest, bar)
            _copy_side_files(src, dst)
            out_cfg = cfg.replace(quantization_config=None, torch_dtype=_DTYPE_NAMES[dtype])
            if mtp == "drop":
                out_cfg = out_cfg.replace(num_nextn_predict_layers=0)
            output.finish(out_cfg.to_hf())
    assert bar.summary is not None
    return bar.summary


def _copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer, generation config and other small files travel along (atomically)."""
    skip = {"config.json", INDEX_NAME, MANIFEST_NAME, LOCK_NAME}
    for path in sorted(src.iterdir()):
        if path.is_file() and path.name not in skip and path.suffix != ".safetensors":
            tmp = dst / (path.name + TMP_SUFFIX)
            shutil.copyfile(path, tmp)
            tmp.replace(dst / path.name)

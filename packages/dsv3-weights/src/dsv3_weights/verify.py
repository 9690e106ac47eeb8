"""`verify_checkpoint`: is a directory exactly the checkpoint its `config.json` describes?

Checks, reporting every problem (each naming file and tensor) rather than stopping at the first: the
index agrees with the files (no missing shard, no tensor in the wrong file, no stray shard); every
tensor of `checkpoint_layout(cfg)` is present with its shape and dtype (FP8 weights with their
`weight_scale_inv` when the config is quantized); no unknown tensor; no NaN/Inf anywhere (read a chunk
of rows at a time, so memory stays bounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from dsv3_config import ModelConfig
from dsv3_weights.errors import CheckpointError
from dsv3_weights.fp8 import CHUNK_BYTES
from dsv3_weights.layout import checkpoint_layout, stored_tensors
from dsv3_weights.progress import Progress
from dsv3_weights.reader import INDEX_NAME, CheckpointReader

_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_SHOWN = 20  # problems listed in an exception message


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], set[torch.dtype]]]:
    """Name -> (shape, accepted dtypes) for a checkpoint of `cfg` (FP8 if it has a quantization_config)."""
    layout = checkpoint_layout(cfg)
    block = cfg.quantization_config.weight_block_size if cfg.quantization_config else None
    dense = _TORCH_DTYPES[cfg.torch_dtype or "bfloat16"]
    stored = stored_tensors(layout, quantized_block=block, dense_dtype=dense)
    # An unquantized checkpoint saved in torch_dtype may store norms and router tensors in it too.
    extra = set() if block else {dense}
    return {name: (shape, {dtype, *extra}) for name, (shape, dtype) in stored.items()}


def layout_problems(reader: CheckpointReader, cfg: ModelConfig) -> list[str]:
    """Missing, unknown, mis-shaped and mis-typed tensors of `reader` against `cfg`."""
    expected = expected_tensors(cfg)
    problems = []
    for name, (shape, dtypes) in expected.items():
        if name not in reader:
            what = "FP8 weight scale" if name.endswith("weight_scale_inv") else "tensor"
            problems.append(f"{reader.directory}: missing {what} {name!r} (config implies shape {list(shape)})")
            continue
        where = f"{reader.file_of(name)}: tensor {name!r}"
        if reader.shape(name) != shape:
            problems.append(f"{where} has shape {list(reader.shape(name))}, config implies {list(shape)}")
        if reader.dtype(name) not in dtypes:
            names = " or ".join(sorted(str(d) for d in dtypes))
            problems.append(f"{where} has dtype {reader.dtype(name)}, expected {names}")
    for name in reader:
        if name not in expected:
            problems.append(f"{reader.file_of(name)}: unknown tensor {name!r} (not implied by config.json)")
    return problems


def row_chunks(reader: CheckpointReader, name: str) -> Iterator[torch.Tensor]:
    """A stored tensor as consecutive dim-0 chunks of about `CHUNK_BYTES // 4` bytes."""
    shape = reader.shape(name)
    rows = shape[0] if shape else 1
    step = max(1, (CHUNK_BYTES // 4) // max(1, reader.nbytes(name) // max(rows, 1)))
    for r0 in range(0, rows, step):
        yield reader.get_rows(name, r0, min(rows, r0 + step))


def nonfinite_problems(reader: CheckpointReader, progress: bool = False) -> list[str]:
    problems = []
    with Progress("verify values", sum(reader.nbytes(n) for n in reader), enabled=progress) as bar:
        for name in reader:
            if reader.dtype(name).is_floating_point:
                bad = sum(int((~torch.isfinite(chunk.float())).sum()) for chunk in row_chunks(reader, name))
                if bad:
                    problems.append(f"{reader.file_of(name)}: tensor {name!r} has {bad} NaN/Inf values")
            bar.wrote(reader.nbytes(name))
    return problems


def verify_checkpoint(directory: str | Path, *, check_values: bool = True, progress: bool = False) -> list[str]:
    """Every problem found in the checkpoint at `directory` (empty when it is sound)."""
    directory = Path(directory)
    try:
        reader = CheckpointReader(directory)
        cfg = reader.config()
    except (ValueError, FileNotFoundError) as err:  # CheckpointError, JSON and pydantic errors are ValueErrors
        return [str(err)]
    with reader:
        problems = layout_problems(reader, cfg)
        listed = {p.name for p in reader.files()}
        if (directory / INDEX_NAME).exists():
            problems += [
                f"{path}: shard not referenced by {INDEX_NAME}"
                for path in sorted(directory.glob("*.safetensors"))
                if path.name not in listed
            ]
        if check_values:
            problems += nonfinite_problems(reader, progress)
    return problems


def check_checkpoint(directory: str | Path, *, check_values: bool = True, progress: bool = False) -> None:
    """`verify_checkpoint`, raising `CheckpointError` listing the problems if there are any."""
    problems = verify_checkpoint(directory, check_values=check_values, progress=progress)
    if problems:
        shown = "\n  ".join(problems[:_SHOWN])
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise CheckpointError(f"{directory}: {len(problems)} problems:\n  {shown}{more}")

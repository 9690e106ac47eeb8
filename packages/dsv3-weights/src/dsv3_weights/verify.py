"""`verify_checkpoint`: is a directory exactly the checkpoint its `config.json` describes?

Checks, reporting every problem (each naming file and tensor) rather than stopping at the first: the
index agrees with the files (no missing shard, no tensor in the wrong file, no stray shard); every
tensor of `checkpoint_layout(cfg)` is present with its shape and dtype (FP8 weights with their
`weight_scale_inv` when the config is quantized); no unknown tensor (`validate.layout_problems`, the
checks every command applies to its source); no NaN/Inf anywhere (read a chunk of rows at a time, so
memory stays bounded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from dsv3_weights.errors import CheckpointError
from dsv3_weights.fp8 import CHUNK_BYTES
from dsv3_weights.progress import Progress
from dsv3_weights.reader import INDEX_NAME, CheckpointReader
from dsv3_weights.validate import layout_problems

_SHOWN = 20  # problems listed in an exception message


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

"""The golden file: what NxDI's `inference_demo --check-accuracy-mode logit-matching
--expected-outputs-path FILE` reads, and what `dsv3 verify --golden` reads back.

NxDI (`inference_demo.py`, `run_accuracy_check`) does `expected_outputs = torch.load(path)` and then
`expected_logits = torch.stack(expected_outputs.scores)`: it needs an object with a `.scores`
attribute holding N tensors `[batch, vocab]` (tokens are the argmax over the vocabulary). Under torch >=
2.6 (the Neuron SDK's 2.9 included) `torch.load` defaults to `weights_only=True`, whose unpickler
accepts only allowlisted types: transformers' `GenerateDecoderOnlyOutput` is not one. A
`collections.OrderedDict` is, and the unpickler restores an OrderedDict's instance attributes (that is
how `state_dict()._metadata` survives), so the file holds an OrderedDict whose items are also set as
attributes: `obj.scores` and `obj["scores"]` both work, no `add_safe_globals` needed.

Items: `scores` (tuple of N fp32 `[B, V]`), `sequences` (int64 `[B, P + N]`, prompt then tokens),
`prompt_length`, `mode` ("greedy" or "teacher-forced"), `format`, `model`, `dtype`, and in
teacher-forced mode `logits` (fp32 `[B, P + N, V]`, every position).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from dsv3_weights.errors import CheckpointError
from dsv3_weights.safetensors_io import fsync_replace

FORMAT = "dsv3-golden/1"
MODES = ("greedy", "teacher-forced")


# what torch.load's weights-only unpickler raises on bytes that are not a torch.save file
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError)


class GoldenFileError(CheckpointError):
    """A golden file that cannot be read or lacks what the comparison needs."""


@dataclass(frozen=True)
class Golden:
    scores_NBV: torch.Tensor
    sequences_BL: torch.Tensor
    prompt_length: int
    mode: str
    logits_BLV: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.scores_NBV.shape[0])


def golden_object(golden: Golden, *, model: str, dtype: str) -> OrderedDict[str, object]:
    items: dict[str, object] = {
        "format": FORMAT,
        "scores": tuple(golden.scores_NBV.float().unbind(0)),
        "sequences": golden.sequences_BL.to(torch.int64),
        "prompt_length": golden.prompt_length,
        "mode": golden.mode,
        "model": model,
        "dtype": dtype,
    }
    if golden.logits_BLV is not None:
        items["logits"] = golden.logits_BLV.float()
    obj: OrderedDict[str, object] = OrderedDict(items)
    for key, value in items.items():
        setattr(obj, key, value)
    return obj


def write_golden(path: Path, golden: Golden, *, model: str, dtype: str) -> None:
    """Write under a temporary name in the same directory, then rename: never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(golden_object(golden, model=model, dtype=dtype), tmp)
        fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_golden(path: Path) -> Golden:
    """Load as NxDI does (`torch.load`, weights_only) and check the shapes agree."""
    try:
        obj = torch.load(path, weights_only=True)
    except _UNREADABLE as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise GoldenFileError(
            f"{path}: not a golden file torch.load can read ({type(err).__name__}: {first_line})"
        ) from err
    scores = getattr(obj, "scores", None)
    sequences = getattr(obj, "sequences", None)
    if not isinstance(scores, (tuple, list)) or not scores or not isinstance(sequences, torch.Tensor):
        raise GoldenFileError(f"{path}: no .scores (tensors [batch, vocab]) and .sequences: not a golden file")
    scores_NBV = torch.stack(list(scores))
    prompt_length = int(getattr(obj, "prompt_length", sequences.shape[-1] - len(scores)))
    if scores_NBV.dim() != 3 or sequences.dim() != 2 or sequences.shape[0] != scores_NBV.shape[1]:
        raise GoldenFileError(
            f"{path}: scores {tuple(scores_NBV.shape)} and sequences {tuple(sequences.shape)} do not agree"
        )
    if sequences.shape[1] != prompt_length + scores_NBV.shape[0] or prompt_length < 1:
        raise GoldenFileError(
            f"{path}: sequences hold {sequences.shape[1]} tokens, expected prompt_length {prompt_length} + "
            f"{scores_NBV.shape[0]} scored"
        )
    mode = str(getattr(obj, "mode", "greedy"))
    logits = getattr(obj, "logits", None)
    return Golden(scores_NBV, sequences, prompt_length, mode, logits if isinstance(logits, torch.Tensor) else None)

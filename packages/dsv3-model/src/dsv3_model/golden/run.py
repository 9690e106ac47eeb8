"""Streamed runs: greedy generation and teacher forcing over `streamed_causal_lm`, with the summary.

Both are the library's own procedures on the streamed model: `generation.generate` (prefill of the
prompt, then one decode call per token over the latent cache; no EOS stop, every step is scored) and
`generation.teacher_forced_logits` (one prefill over the whole sequence).

Memory: `max_memory` bounds the weights in memory: five eighths are the LRU of layers, experts and the
head, one eighth the buffer the chosen experts of one MoE call are stacked into, and the last quarter
is headroom for what is in flight (the tensor being dequantized, a layer still running after its
eviction). None: unbounded. glibc is asked to serve buffers of 4 MiB and more by mmap, so that freed
weights go back to the system instead of fragmenting the heap (measured on the benchmark's checkpoint:
peak RSS 1.79 -> 1.55 GiB with the same 1 GiB of weights).

Shape legend: B batch, P prompt length, N scored tokens, L = P + N, V vocabulary.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from dsv3_config import load_config
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.generation import generate, teacher_forced_logits
from dsv3_model.golden.golden_file import Golden
from dsv3_model.golden.progress import RunProgress
from dsv3_model.golden.source import CountingSource
from dsv3_model.golden.streamed_model import StreamedWeights, streamed_causal_lm
from dsv3_model.golden.weight_cache import WeightCache
from dsv3_weights.progress import gib, peak_rss_bytes
from dsv3_weights.reader import CheckpointReader

UNBOUNDED = 1 << 62
_M_MMAP_THRESHOLD = -3  # glibc malloc.h


@dataclass(frozen=True)
class RunSummary:
    steps: int
    seconds: float
    bytes_read: int
    loads: int
    hits: int
    peak_resident_weights: int
    max_memory: int | None
    peak_rss: int

    def format(self) -> str:
        bound = "unbounded" if self.max_memory is None else gib(self.max_memory)
        return (
            f"golden: {self.steps} model calls in {self.seconds:.1f} s; read {gib(self.bytes_read)} "
            f"({self.loads} loads, {self.hits} cache hits); resident weights peak "
            f"{gib(self.peak_resident_weights)} (max-memory {bound}); peak RSS {gib(self.peak_rss)}"
        )


@dataclass(frozen=True)
class GoldenRun:
    golden: Golden
    summary: RunSummary


@contextmanager
def streamed_model(
    model_dir: Path, *, dtype: torch.dtype, max_memory: int | None, steps: int, progress: bool
) -> Iterator[tuple[DeepseekForCausalLM, StreamedWeights]]:
    cfg = load_config(model_dir)
    budget = UNBOUNDED if max_memory is None else max_memory
    _return_freed_buffers()
    with CheckpointReader(model_dir) as reader:
        source = CountingSource(reader, cfg)
        bars = RunProgress(steps, cfg.num_hidden_layers, lambda: source.bytes_read, enabled=progress)
        weights = StreamedWeights(source, dtype, WeightCache(budget // 8 * 5), budget // 8, bars)
        try:
            yield streamed_causal_lm(weights), weights
        finally:
            weights.release()
            bars.close()


def _return_freed_buffers() -> None:
    """`mallopt(M_MMAP_THRESHOLD, 4 MiB)` where the C library is glibc (a fixed threshold also stops glibc
    from raising it after each free, which is what sends multi-MB buffers to the heap)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024)


def _summary(weights: StreamedWeights, steps: int, start: float, max_memory: int | None) -> RunSummary:
    cache = weights.cache
    return RunSummary(
        steps=steps,
        seconds=time.perf_counter() - start,
        bytes_read=weights.source.bytes_read,
        loads=cache.loads,
        hits=cache.hits,
        peak_resident_weights=cache.peak_resident_bytes,
        max_memory=max_memory,
        peak_rss=peak_rss_bytes()[0],
    )


def golden_greedy(
    model_dir: Path,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    dtype: torch.dtype = torch.float32,
    max_memory: int | None = None,
    progress: bool = False,
) -> GoldenRun:
    """Greedy continuation of equal-length prompts by `max_new_tokens` tokens, each step's logits kept."""
    if max_new_tokens < 1 or len({len(p) for p in prompts}) != 1:
        raise ValueError("golden_greedy: needs max_new_tokens >= 1 and prompts of one length")
    start = time.perf_counter()
    with streamed_model(model_dir, dtype=dtype, max_memory=max_memory, steps=max_new_tokens, progress=progress) as (
        model,
        weights,
    ):
        result = generate(model, prompts, max_new_tokens, keep_logits=True)
    assert result.step_logits_BNV is not None
    sequences_BL = torch.tensor([[*p, *t] for p, t in zip(prompts, result.tokens, strict=True)])
    golden = Golden(result.step_logits_BNV.transpose(0, 1).contiguous(), sequences_BL, len(prompts[0]), "greedy")
    return GoldenRun(golden, _summary(weights, max_new_tokens, start, max_memory))


def golden_teacher_forced(
    model_dir: Path,
    prompt: Sequence[int],
    continuation: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    max_memory: int | None = None,
    progress: bool = False,
) -> GoldenRun:
    """Logits at every position of `prompt + continuation` in one streamed pass; `scores` are the
    positions that predict the continuation (position P - 1 + i predicts continuation[i])."""
    if not prompt or not continuation:
        raise ValueError("golden_teacher_forced: needs a prompt and a continuation")
    start = time.perf_counter()
    with streamed_model(model_dir, dtype=dtype, max_memory=max_memory, steps=1, progress=progress) as (model, weights):
        logits_LV = teacher_forced_logits(model, [*prompt, *continuation]).float()
    first = len(prompt) - 1
    scores_N1V = logits_LV[first : first + len(continuation)].unsqueeze(1)
    sequences_1L = torch.tensor([[*prompt, *continuation]])
    golden = Golden(scores_N1V.contiguous(), sequences_1L, len(prompt), "teacher-forced", logits_LV.unsqueeze(0))
    return GoldenRun(golden, _summary(weights, 1, start, max_memory))

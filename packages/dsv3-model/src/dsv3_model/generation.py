"""Batched generation over the compressed latent cache.

Prompts of different lengths are right-padded into one prefill; each row then decodes at its own
position (row b's next token sits at position `len_b + step`), so no row ever waits for or attends to
another row's padding. Rows stop on an EOS id or at `max_new_tokens`; finished rows keep decoding a
padding token whose output is discarded (their cache slots are never read again).

Eager decode is the default, compiled decode an option (`compile_decode=True`; `dsv3 generate` runs
eagerly), from measurement on the medium preset, 256-token context (benchmarks/bench_model.py, a shared
2-core AMD EPYC with avx512_bf16, no AMX): the compiled step is faster per token (1 thread: 13.9 ms
against 18.0 in fp32, 14.9 against 21.0 in bf16; 2 threads at load average ~5: 16.1 against 8.8 tok/s
in fp32), but compiling takes 22-29 s on 2 cores for each new batch size and cache length, so it repays
itself only after some 5,000 decoded tokens of one shape. A serving loop with fixed shapes should
compile; a command that generates a few hundred tokens should not. A compiled model keeps its step
(`compiled_step`), so later calls of the same shapes compile nothing.

Shape legend: B batch rows, P padded prompt length, S tokens in a call, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.compiled_decode import CompiledDecodeStep
from dsv3_model.sampling import SamplingParams, make_generator, select_next


@dataclass(frozen=True)
class GenerationResult:
    """Generated ids per row (prompt excluded, EOS included when hit) and the logits of each step."""

    tokens: list[list[int]]
    step_logits_BNV: torch.Tensor | None


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, P] and the prompt lengths [B]."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    lengths_B = torch.tensor([len(p) for p in prompts], dtype=torch.int64)
    ids_BP = torch.full((len(prompts), int(lengths_B.max())), pad_id, dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        ids_BP[row, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.int64)
    return ids_BP, lengths_B


@torch.inference_mode()
def generate(
    model: DeepseekForCausalLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingParams | None = None,
    eos_token_ids: Sequence[int] = (),
    keep_logits: bool = False,
    compile_decode: bool = False,
) -> GenerationResult:
    """Greedy or sampled generation on the model's device (inputs are made there). `compile_decode` runs
    the decode steps through `CompiledDecodeStep` (torch.compile, static cache and shapes), compiled once."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    sampling = sampling or SamplingParams()
    generator = make_generator(sampling)
    device = model.model.norm.weight.device  # every variant holds it (streamed ones: dsv3_model.golden)
    ids_BP, lengths_B = (t.to(device) for t in pad_prompts(prompts))
    batch = ids_BP.shape[0]
    caches = model.new_cache(batch, ids_BP.shape[1] + max_new_tokens)
    positions_BP = torch.arange(ids_BP.shape[1], device=device).expand(batch, -1)
    decode_step = CompiledDecodeStep(model) if compile_decode else None
    logits_BPV = model(ids_BP, positions_BP, caches, lengths_B)
    logits_BV = logits_BPV[torch.arange(batch, device=device), lengths_B - 1]

    eos = torch.tensor(list(eos_token_ids), dtype=torch.int64, device=device)
    finished_B = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    kept: list[torch.Tensor] = []
    positions_B = lengths_B.clone()
    for step in range(max_new_tokens):
        if keep_logits:
            kept.append(logits_BV.float())
        next_B = select_next(logits_BV, sampling, generator)
        for row in range(batch):
            if not finished_B[row]:
                tokens[row].append(int(next_B[row]))
        finished_B |= torch.isin(next_B, eos)
        if bool(finished_B.all()) or step == max_new_tokens - 1:
            break
        if decode_step is not None:
            logits_BV = decode_step(next_B, positions_B, caches)
        else:
            logits_BV = model(next_B[:, None], positions_B[:, None], caches, torch.ones_like(lengths_B))[:, 0]
        positions_B += 1
    step_logits = torch.stack(kept, dim=1) if kept else None
    return GenerationResult(tokens=tokens, step_logits_BNV=step_logits)


@torch.inference_mode()
def teacher_forced_logits(model: DeepseekForCausalLM, ids: Sequence[int]) -> torch.Tensor:
    """Logits [S, V] for one sequence in a single prefill (what `verify` compares position by position)."""
    device = model.model.norm.weight.device  # every variant holds it (streamed ones: dsv3_model.golden)
    ids_1S = torch.tensor([list(ids)], dtype=torch.int64, device=device)
    caches = model.new_cache(1, ids_1S.shape[1])
    positions_1S = torch.arange(ids_1S.shape[1], device=device)[None]
    return model(ids_1S, positions_1S, caches, torch.tensor([ids_1S.shape[1]], device=device))[0]

"""Batched generation over the compressed latent cache.

Prompts of different lengths are right-padded into one prefill; each row then decodes at its own
position (row b's next token sits at position `len_b + step`), so no row ever waits for or attends to
another row's padding. Rows stop on an EOS id or at `max_new_tokens`; finished rows keep decoding a
padding token whose output is discarded (their cache slots are never read again).

The decode step runs eagerly, compiled (`compile_decode=True`: `CompiledDecodeStep`, torch.compile over
static shapes, compiled once per model and shapes), or, by default (`"auto"`), eagerly until a
measurement made on this machine says compiling repays itself over the steps left (`dsv3_model.decode_choice`).
A model running prepacked eager CPU kernels (`dsv3_model.cpu_kernels`, the loaders' default) decodes
eagerly: those kernels do not compile, and where they were chosen they measured faster.
A compiled model keeps its step (`compiled_step`), so later calls of the same shapes compile nothing.

Shape legend: B batch rows, P padded prompt length, S tokens in a call, V vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from dsv3_mla import LatentCache
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.compiled_decode import CompiledDecodeStep
from dsv3_model.cpu_kernels import runs_eager_only_kernels
from dsv3_model.decode_choice import PROBE_STEPS, compiled_record, read_record, shape_key, should_switch, write_record
from dsv3_model.sampling import SamplingParams, make_generator, select_next

CompileChoice = bool | Literal["auto"]


@dataclass(frozen=True)
class GenerationResult:
    """Generated ids per row (prompt excluded, EOS included when hit) and the logits of each step; which
    decode path ran and the seconds of each decode step (token choice and model step), for reports."""

    tokens: list[list[int]]
    step_logits_BNV: torch.Tensor | None
    decode_path: str = "eager"
    step_seconds: tuple[float, ...] = ()


class DecodeSteps:
    """The decode step of one `generate` call: eager, compiled, or (`"auto"`) eager for `PROBE_STEPS`
    steps, then compiled if `should_switch` says the record for these shapes repays it."""

    def __init__(self, model: DeepseekForCausalLM, compile_decode: CompileChoice, batch: int, cache_len: int) -> None:
        eager_only = runs_eager_only_kernels(model)
        if compile_decode is True and eager_only:
            raise ValueError(
                "compile_decode=True: this model runs prepacked eager CPU kernels, which do not compile; "
                "load it with kernels='reference' to compile its decode step"
            )
        compile_decode = False if eager_only else compile_decode  # "auto" has nothing to switch to
        self.model, self.choice, self.shapes = model, compile_decode, (batch, cache_len)
        self.key = None if compile_decode is False else shape_key(model, model.config, batch, cache_len)
        self.record = read_record(self.key) if compile_decode == "auto" and self.key is not None else None
        self.already_compiled = self.shapes in model.compiled_shapes
        self.compiled = CompiledDecodeStep(model) if compile_decode is True else None
        self.switched_at = 0 if compile_decode is True else None
        self.seconds: list[float] = []

    def __call__(self, next_B: torch.Tensor, positions_B: torch.Tensor, caches: list[LatentCache]) -> torch.Tensor:
        if self.compiled is not None:
            return self.compiled(next_B, positions_B, caches)
        return self.model(next_B[:, None], positions_B[:, None], caches, torch.ones_like(positions_B))[:, 0]

    def timed(self, seconds: float, steps_left: int) -> None:
        """Record one step's seconds; after the probe steps, maybe switch to the compiled step."""
        self.seconds.append(seconds)
        probed = self.choice == "auto" and self.compiled is None and len(self.seconds) == PROBE_STEPS
        if probed and should_switch(self.seconds, steps_left, self.record, self.already_compiled):
            self.compiled, self.switched_at = CompiledDecodeStep(self.model), len(self.seconds)

    def finish(self) -> str:
        """Store what a fresh compile measured; say which path ran."""
        if self.switched_at is None:
            return "eager"
        if self.key is not None and not self.already_compiled:
            record = compiled_record(self.seconds[self.switched_at :])
            if record is not None:
                write_record(self.key, record)
        self.model.compiled_shapes.add(self.shapes)
        return "compiled" if self.switched_at == 0 else f"eager for {self.switched_at} steps, then compiled"


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
    compile_decode: CompileChoice = "auto",
) -> GenerationResult:
    """Greedy or sampled generation on the model's device (inputs are made there). `compile_decode`:
    True runs the decode steps through `CompiledDecodeStep` (torch.compile, static cache and shapes),
    False eagerly, "auto" as this machine's measurement says (`dsv3_model.decode_choice`)."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if compile_decode not in (True, False, "auto"):
        raise ValueError(f"compile_decode must be True, False or 'auto', got {compile_decode!r}")
    sampling = sampling or SamplingParams()
    generator = make_generator(sampling)
    device = model.model.norm.weight.device  # every variant holds it (streamed ones: dsv3_model.golden)
    ids_BP, lengths_B = (t.to(device) for t in pad_prompts(prompts))
    batch = ids_BP.shape[0]
    caches = model.new_cache(batch, ids_BP.shape[1] + max_new_tokens)
    positions_BP = torch.arange(ids_BP.shape[1], device=device).expand(batch, -1)
    decode_step = DecodeSteps(model, compile_decode, batch, ids_BP.shape[1] + max_new_tokens)
    logits_BPV = model(ids_BP, positions_BP, caches, lengths_B)
    logits_BV = logits_BPV[torch.arange(batch, device=device), lengths_B - 1]

    eos = torch.tensor(list(eos_token_ids), dtype=torch.int64, device=device)
    finished_B = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    kept: list[torch.Tensor] = []
    positions_B = lengths_B.clone()
    for step in range(max_new_tokens):
        start = time.perf_counter()
        if keep_logits:
            kept.append(logits_BV.float())
        next_B = select_next(logits_BV, sampling, generator)
        for row in range(batch):
            if not finished_B[row]:
                tokens[row].append(int(next_B[row]))
        finished_B |= torch.isin(next_B, eos)
        if bool(finished_B.all()) or step == max_new_tokens - 1:
            break
        logits_BV = decode_step(next_B, positions_B, caches)
        positions_B += 1
        decode_step.timed(time.perf_counter() - start, max_new_tokens - step - 2)
    step_logits = torch.stack(kept, dim=1) if kept else None
    path = decode_step.finish()
    return GenerationResult(tokens, step_logits, decode_path=path, step_seconds=tuple(decode_step.seconds))


@torch.inference_mode()
def teacher_forced_logits(model: DeepseekForCausalLM, ids: Sequence[int]) -> torch.Tensor:
    """Logits [S, V] for one sequence in a single prefill (what `verify` compares position by position)."""
    device = model.model.norm.weight.device  # every variant holds it (streamed ones: dsv3_model.golden)
    ids_1S = torch.tensor([list(ids)], dtype=torch.int64, device=device)
    caches = model.new_cache(1, ids_1S.shape[1])
    positions_1S = torch.arange(ids_1S.shape[1], device=device)[None]
    return model(ids_1S, positions_1S, caches, torch.tensor([ids_1S.shape[1]], device=device))[0]

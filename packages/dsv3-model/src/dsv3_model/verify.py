"""Logit matching against transformers: the report the NxDI contrib port shows for the 671B model,
for any checkpoint, on a CPU.

Procedure (as the contrib port's golden run): transformers greedily continues the prompt by N tokens
(the golden sequence). Teacher-forced: both models score prompt + golden in one pass and each
generated position's top-1 is compared, with the logit difference. Free-running: our model greedily
continues the prompt by itself; its tokens are compared with the golden ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.generation import generate, teacher_forced_logits


@dataclass(frozen=True)
class PositionReport:
    position: int
    golden_token: int
    ours_top1: int
    hf_top1: int
    max_abs_logit_diff: float
    golden_logit: float | None = None  # the golden token's logit, reference and ours (golden-file reports)
    ours_logit: float | None = None


@dataclass(frozen=True)
class VerifyReport:
    prompt_length: int
    tolerance: float
    positions: list[PositionReport] = field(default_factory=list)
    free_running_tokens: list[int] = field(default_factory=list)
    golden_tokens: list[int] = field(default_factory=list)
    max_abs_logit_diff: float = 0.0
    mean_abs_logit_diff: float = 0.0
    reference: str = "hf"

    @property
    def teacher_forced_matches(self) -> int:
        return sum(p.ours_top1 == p.hf_top1 for p in self.positions)

    @property
    def free_running_matches(self) -> int:
        return sum(a == b for a, b in zip(self.free_running_tokens, self.golden_tokens, strict=True))

    @property
    def passed(self) -> bool:
        n = len(self.golden_tokens)
        return (
            self.max_abs_logit_diff <= self.tolerance
            and self.teacher_forced_matches == n
            and self.free_running_matches == n
        )

    def emit(self, as_json: bool) -> int:
        """Print the report (JSON or the table) on stdout; the command's exit status (1 when it failed)."""
        if as_json:
            json.dump(self.to_json(), sys.stdout, indent=2)
            print()
        else:
            print(self.format())
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            teacher_forced_matches=self.teacher_forced_matches,
            free_running_matches=self.free_running_matches,
            passed=self.passed,
        )
        return out

    def format(self) -> str:
        logits = all(p.golden_logit is not None and p.ours_logit is not None for p in self.positions)
        logit_head = f" {'golden logit':>12} {'ours':>12} {'diff':>10}" if logits else ""
        lines = [f"{'pos':>4} {'golden':>7} {'ours':>7} {self.reference:>7}{logit_head} {'max|dlogit|':>12}"]
        for p in self.positions:
            mark = "" if p.ours_top1 == p.hf_top1 else "  <- top-1 differs"
            columns = f"{p.position:>4} {p.golden_token:>7} {p.ours_top1:>7} {p.hf_top1:>7}"
            if logits and p.golden_logit is not None and p.ours_logit is not None:
                diff = p.ours_logit - p.golden_logit
                columns += f" {p.golden_logit:>12.5f} {p.ours_logit:>12.5f} {diff:>10.2e}"
            lines.append(f"{columns} {p.max_abs_logit_diff:>12.3e}{mark}")
        n = len(self.golden_tokens)
        lines += [
            f"teacher-forced top-1 match: {self.teacher_forced_matches}/{n}",
            f"free-running token match:   {self.free_running_matches}/{n}",
            f"logit |diff| max {self.max_abs_logit_diff:.3e}, mean {self.mean_abs_logit_diff:.3e} "
            f"(tolerance {self.tolerance:.1e})",
            "PASS" if self.passed else "FAIL",
        ]
        return "\n".join(lines)


@torch.inference_mode()
def hf_greedy(hf_model: Any, prompt_ids: Sequence[int], num_tokens: int) -> list[int]:
    """transformers' greedy continuation, recomputing the full sequence each step (no cache quirks)."""
    ids = list(prompt_ids)
    for _ in range(num_tokens):
        logits = hf_model(torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt_ids) :]


def report_from_logits(
    model: DeepseekForCausalLM,
    prompt_ids: Sequence[int],
    golden_tokens: Sequence[int],
    ours_NV: torch.Tensor,
    reference_NV: torch.Tensor,
    diff_XV: torch.Tensor,
    tolerance: float,
    *,
    reference: str = "hf",
    token_logits: bool = False,
) -> VerifyReport:
    """The report both comparisons print: row i of `ours_NV` / `reference_NV` predicts `golden_tokens[i]`;
    `diff_XV` is |ours - reference| over every position compared (its max and mean are reported);
    `token_logits` adds each golden token's two logits. Our free-running continuation comes on top."""
    first = len(prompt_ids) - 1  # the logits that predict golden_tokens[0]
    positions = [
        PositionReport(
            position=first + i,
            golden_token=token,
            ours_top1=int(ours_NV[i].argmax()),
            hf_top1=int(reference_NV[i].argmax()),
            max_abs_logit_diff=float((ours_NV[i] - reference_NV[i]).abs().max()),
            golden_logit=float(reference_NV[i, token]) if token_logits else None,
            ours_logit=float(ours_NV[i, token]) if token_logits else None,
        )
        for i, token in enumerate(golden_tokens)
    ]
    free = generate(model, [list(prompt_ids)], len(golden_tokens)).tokens[0]
    return VerifyReport(
        prompt_length=len(prompt_ids),
        tolerance=tolerance,
        positions=positions,
        free_running_tokens=free,
        golden_tokens=list(golden_tokens),
        max_abs_logit_diff=float(diff_XV.max()),
        mean_abs_logit_diff=float(diff_XV.mean()),
        reference=reference,
    )


@torch.inference_mode()
def verify_against_hf(
    model: DeepseekForCausalLM, hf_model: Any, prompt_ids: Sequence[int], num_tokens: int, tolerance: float
) -> VerifyReport:
    golden = hf_greedy(hf_model, prompt_ids, num_tokens)
    sequence = [*prompt_ids, *golden]
    ours_SV = teacher_forced_logits(model, sequence).float()
    hf_SV = hf_model(torch.tensor([sequence])).logits[0].float()
    first = len(prompt_ids) - 1  # the logits that predict golden[0]
    scored = slice(first, first + num_tokens)
    return report_from_logits(
        model, prompt_ids, golden, ours_SV[scored], hf_SV[scored], (ours_SV - hf_SV).abs(), tolerance
    )

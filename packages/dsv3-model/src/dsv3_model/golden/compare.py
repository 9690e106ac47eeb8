"""`dsv3 verify --model DIR --golden FILE`: a model's logits against a golden file, in the report
`dsv3 verify` prints against transformers (`dsv3_model.verify.VerifyReport`), transformers never imported.

Row 0 of the file is compared (NxDI writes one row per batch slot, all the same prompt). Teacher-forced:
our model scores prompt + golden tokens in one pass, and each scored position's top-1, the golden
token's logit (golden, ours, difference) and the largest |logit difference| are reported. Free-running:
our model continues the prompt greedily by itself and its tokens are compared with the golden ones.

Shape legend: L prompt + golden tokens, N scored positions, V vocabulary.
"""

from __future__ import annotations

import argparse

import torch

from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.generation import teacher_forced_logits
from dsv3_model.golden.golden_file import Golden, GoldenFileError, read_golden
from dsv3_model.verify import VerifyReport, report_from_logits


@torch.inference_mode()
def verify_golden(model: DeepseekForCausalLM, golden: Golden, tolerance: float) -> VerifyReport:
    sequence = golden.sequences_BL[0].tolist()
    prompt, tokens = sequence[: golden.prompt_length], sequence[golden.prompt_length :]
    vocab = model.config.vocab_size
    if golden.scores_NBV.shape[2] != vocab or max(sequence) >= vocab or min(sequence) < 0:
        raise GoldenFileError(
            f"golden file: vocabulary {golden.scores_NBV.shape[2]} / ids up to {max(sequence)} do not fit the "
            f"model's vocab_size {vocab}"
        )
    first = golden.prompt_length - 1
    ours_NV = teacher_forced_logits(model, sequence).float()[first : first + len(tokens)]
    golden_NV = golden.scores_NBV[:, 0].float()
    return report_from_logits(
        model,
        prompt,
        tokens,
        ours_NV,
        golden_NV,
        (ours_NV - golden_NV).abs(),
        tolerance,
        reference="golden",
        token_logits=True,
    )


def verify_golden_command(args: argparse.Namespace) -> int:
    """The `--golden` branch of `dsv3 verify`: load our model in memory (fp32), compare, print."""
    from dsv3_model.loading import load_causal_lm

    golden = read_golden(args.golden)
    model = load_causal_lm(args.model, dtype=torch.float32, include_mtp=False, weights=args.weights)
    report = verify_golden(model, golden, args.tolerance)
    return report.emit(args.json)

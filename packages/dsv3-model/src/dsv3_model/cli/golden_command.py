"""`dsv3 golden`: reference logits from a checkpoint streamed layer by layer (docs/golden.md).

Greedy (`--max-new-tokens N`) or teacher-forced (`--teacher-forced IDS`: the continuation to score) over
the prompt; writes the golden file NxDI's `inference_demo --expected-outputs-path` reads, prints the
tokens on stdout and the summary (time, bytes read, peak RSS) on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from dsv3_model.cli.errors import UsageError

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gold = subparsers.add_parser("golden", help="reference logits, weights streamed from the checkpoint")
    gold.add_argument("--model", type=Path, required=True, help="HF checkpoint directory (FP8 or BF16)")
    prompt = gold.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text (needs a tokenizer in the model directory)")
    prompt.add_argument("--prompt-ids", help="comma-separated token ids; ';' separates rows of equal length")
    mode = gold.add_mutually_exclusive_group(required=True)
    mode.add_argument("--max-new-tokens", type=int, help="greedy: generate and score N tokens")
    mode.add_argument("--teacher-forced", metavar="IDS", help="score these comma-separated ids after the prompt")
    gold.add_argument("--out", type=Path, required=True, help="golden file to write (torch.save)")
    gold.add_argument("--max-memory", help="bound on resident weights, e.g. 1GB, 512MiB (default: half the RAM)")
    gold.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    gold.add_argument("--no-progress", action="store_true", help="no progress bars")
    gold.set_defaults(handler=_golden)


def parse_size(text: str) -> int:
    """`1GB`, `1.5G`, `512MiB`, `1048576`: bytes, powers of 1024 whichever spelling."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise UsageError(f"--max-memory: expected a size like 1GB or 512MiB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_ids(option: str, text: str) -> list[list[int]]:
    try:
        rows = [[int(tok) for tok in part.split(",") if tok.strip()] for part in text.split(";")]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if any(not row for row in rows):
        raise UsageError(f"{option}: every row needs at least one id, got {text!r}")
    return rows


def _prompts(args: argparse.Namespace, vocab: int) -> list[list[int]]:
    if args.prompt is not None:
        from dsv3_model.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.model)
        if tokenizer is None:
            raise UsageError(f"--prompt needs a tokenizer in {args.model}; use --prompt-ids")
        prompts = [list(tokenizer.encode(args.prompt))]
    else:
        prompts = parse_ids("--prompt-ids", args.prompt_ids)
    if len({len(p) for p in prompts}) != 1:
        raise UsageError("--prompt-ids: the rows of a golden batch must have one length")
    _check_ids("--prompt-ids", prompts, vocab)
    return prompts


def _check_ids(option: str, rows: list[list[int]], vocab: int) -> None:
    for row in rows:
        if min(row) < 0 or max(row) >= vocab:
            raise UsageError(f"{option}: ids must be in 0..{vocab - 1}, got {row}")


def _golden(args: argparse.Namespace) -> int:
    from dsv3_config import load_config

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens: must be >= 1, got {args.max_new_tokens}")
    if not args.out.parent.is_dir():
        raise UsageError(f"--out: directory {args.out.parent} does not exist")
    max_memory = parse_size(args.max_memory) if args.max_memory is not None else _half_ram()
    cfg = load_config(args.model)
    prompts = _prompts(args, cfg.vocab_size)

    import torch

    from dsv3_model.golden.golden_file import write_golden
    from dsv3_model.golden.run import golden_greedy, golden_teacher_forced

    dtype = getattr(torch, DTYPES[args.dtype])
    progress = not args.no_progress
    if args.teacher_forced is not None:
        continuation = parse_ids("--teacher-forced", args.teacher_forced)
        if len(continuation) != 1 or len(prompts) != 1:
            raise UsageError("--teacher-forced: scores one sequence (no ';' in --prompt-ids or --teacher-forced)")
        _check_ids("--teacher-forced", continuation, cfg.vocab_size)
        run = golden_teacher_forced(
            args.model, prompts[0], continuation[0], dtype=dtype, max_memory=max_memory, progress=progress
        )
    else:
        run = golden_greedy(
            args.model, prompts, args.max_new_tokens, dtype=dtype, max_memory=max_memory, progress=progress
        )
    write_golden(args.out, run.golden, model=str(args.model), dtype=args.dtype)
    for row in run.golden.sequences_BL[:, run.golden.prompt_length :].tolist():
        print(" ".join(str(t) for t in row))
    print(run.summary.format(), file=sys.stderr)
    print(f"wrote {args.out} ({run.golden.num_tokens} scored positions)", file=sys.stderr)
    return 0


def _half_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2

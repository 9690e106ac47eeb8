"""`dsv3 golden`: reference logits from a checkpoint streamed layer by layer (docs/golden.md).

Greedy (`--max-new-tokens N`) or teacher-forced (`--teacher-forced IDS`: the continuation to score) over
the prompt; writes the golden file NxDI's `inference_demo --expected-outputs-path` reads, prints the
tokens on stdout and the summary (time, bytes read, peak RSS) on stderr. Options are checked as every
`dsv3` command checks them (`cli/options.py` while parsing, `cli/prompts.py` against the config), before
torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys

from dsv3_model.cli.errors import UsageError
from dsv3_model.cli.options import (
    byte_size,
    existing_directory,
    file_in_existing_directory,
    non_empty_text,
    positive_int,
    prompt_ids,
)
from dsv3_model.cli.prompts import check_positions, check_prompt_ids

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gold = subparsers.add_parser("golden", help="reference logits, weights streamed from the checkpoint")
    gold.add_argument("--model", type=existing_directory, required=True, help="HF checkpoint directory (FP8 or BF16)")
    prompt = gold.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", type=non_empty_text, help="text (needs a tokenizer in the model directory)")
    prompt.add_argument(
        "--prompt-ids", type=prompt_ids, help="comma-separated token ids; ';' separates rows of equal length"
    )
    mode = gold.add_mutually_exclusive_group(required=True)
    mode.add_argument("--max-new-tokens", type=positive_int, help="greedy: generate and score N tokens, >= 1")
    mode.add_argument(
        "--teacher-forced", type=prompt_ids, metavar="IDS", help="score these comma-separated ids after the prompt"
    )
    gold.add_argument("--out", type=file_in_existing_directory, required=True, help="golden file to write")
    gold.add_argument(
        "--max-memory", type=byte_size, help="bound on resident weights, e.g. 1GB, 512MiB (default: half the RAM)"
    )
    gold.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    gold.add_argument("--no-progress", action="store_true", help="no progress bars")
    gold.add_argument(
        "--allow-long", action="store_true", help="run past max_position_embeddings (a warning instead of the error)"
    )
    gold.set_defaults(handler=_golden)


def _prompts(args: argparse.Namespace, vocab: int) -> list[list[int]]:
    if args.prompt is not None:
        from dsv3_model.cli.run_commands import _text_tokenizer

        prompts = [list(_text_tokenizer(args.model).encode(args.prompt))]
        if not prompts[0]:
            raise UsageError(f"--prompt: {args.prompt!r} encodes to no tokens")
        check_prompt_ids(prompts, vocab, "the tokenizer's ids of --prompt")
        return prompts
    prompts = args.prompt_ids
    if len({len(p) for p in prompts}) != 1:
        raise UsageError("--prompt-ids: the rows of a golden batch must have one length")
    check_prompt_ids(prompts, vocab, "--prompt-ids")
    return list(prompts)


def _continuation(args: argparse.Namespace, prompts: list[list[int]], vocab: int) -> list[int]:
    if len(args.teacher_forced) != 1 or len(prompts) != 1:
        raise UsageError("--teacher-forced: scores one sequence (no ';' in --prompt-ids or --teacher-forced)")
    check_prompt_ids(args.teacher_forced, vocab, "--teacher-forced")
    return list(args.teacher_forced[0])


def _golden(args: argparse.Namespace) -> int:
    from dsv3_config import load_config

    cfg = load_config(args.model)
    prompts = _prompts(args, cfg.vocab_size)
    continuation = None if args.teacher_forced is None else _continuation(args, prompts, cfg.vocab_size)
    scored = args.max_new_tokens if continuation is None else len(continuation)
    check_positions(prompts, scored, cfg.max_position_embeddings, allow_long=args.allow_long)
    max_memory = args.max_memory if args.max_memory is not None else _half_ram()

    from dsv3_model.golden.threads import prefer_passive_omp_wait

    prefer_passive_omp_wait()  # before torch loads libgomp
    import torch

    from dsv3_model.golden.golden_file import write_golden
    from dsv3_model.golden.run import golden_greedy, golden_teacher_forced

    dtype = getattr(torch, DTYPES[args.dtype])
    progress = not args.no_progress
    if continuation is not None:
        run = golden_teacher_forced(
            args.model, prompts[0], continuation, dtype=dtype, max_memory=max_memory, progress=progress
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

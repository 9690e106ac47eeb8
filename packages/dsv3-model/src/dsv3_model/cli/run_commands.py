"""`dsv3 generate` and `dsv3 verify`: run a model, and match its logits against transformers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsv3_config import PRESETS

DTYPES = ("float32", "bfloat16")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gen = subparsers.add_parser("generate", help="generate text or token ids")
    source = gen.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="HF checkpoint directory (BF16 or FP8)")
    source.add_argument("--preset", choices=sorted(PRESETS), help="random weights of a preset (default: tiny)")
    prompt = gen.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="text (needs a tokenizer in the model directory)")
    prompt.add_argument("--prompt-ids", help="comma-separated token ids; ';' separates prompts of a batch")
    gen.add_argument("--max-new-tokens", type=int, default=16)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0, help="sampling seed, and the weights' seed for --preset")
    gen.add_argument("--dtype", choices=DTYPES, default="float32")
    gen.add_argument("--mtp", choices=("keep", "skip"), default="keep", help="load the MTP layer when present")
    gen.set_defaults(handler=_generate)

    ver = subparsers.add_parser("verify", help="logit-matching report against transformers (exit 1 on failure)")
    ver.add_argument("--model", type=Path, required=True, help="HF checkpoint directory transformers can load")
    ver.add_argument("--tokens", type=int, default=32, help="tokens generated after the prompt")
    ver.add_argument("--prompt-ids", help="comma-separated prompt ids (default: 24 seeded random ids)")
    ver.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| allowed (fp32)")
    ver.add_argument("--json", action="store_true")
    ver.add_argument("--golden", type=Path, help="compare with this golden file (dsv3 golden) instead of transformers")
    ver.set_defaults(handler=_verify)


def _parse_ids(text: str) -> list[list[int]]:
    try:
        return [[int(tok) for tok in part.split(",") if tok.strip()] for part in text.split(";")]
    except ValueError as err:
        raise SystemExit(f"--prompt-ids: expected comma-separated integers, got {text!r}") from err


def _generate(args: argparse.Namespace) -> int:
    import torch

    from dsv3_model.generation import generate
    from dsv3_model.loading import load_causal_lm, random_causal_lm
    from dsv3_model.sampling import SamplingParams
    from dsv3_model.tokenizer import load_tokenizer

    dtype = getattr(torch, args.dtype)
    if args.model is not None:
        model = load_causal_lm(args.model, dtype=dtype, include_mtp=args.mtp == "keep")
        tokenizer = load_tokenizer(args.model)
    else:
        model = random_causal_lm(args.preset or "tiny", seed=args.seed, dtype=dtype)
        tokenizer = None
    if args.prompt is not None:
        if tokenizer is None:
            raise SystemExit("--prompt needs a tokenizer in the model directory; use --prompt-ids")
        prompts = [tokenizer.encode(args.prompt)]
    elif args.prompt_ids is not None:
        prompts = _parse_ids(args.prompt_ids)
    else:
        prompts = [[model.config.bos_token_id or 0, 5, 6, 7]]
    vocab = model.config.vocab_size
    for prompt in prompts:
        if not prompt or min(prompt) < 0 or max(prompt) >= vocab:
            raise SystemExit(f"--prompt-ids: ids must be in 0..{vocab - 1}, got {prompt}")
    sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    eos = model.config.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    result = generate(model, prompts, args.max_new_tokens, sampling, eos_token_ids=eos_ids)
    for prompt, tokens in zip(prompts, result.tokens, strict=True):
        if tokenizer is not None:
            print(tokenizer.decode(prompt + tokens))
        else:
            print(" ".join(str(t) for t in tokens))
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.golden is not None:
        from dsv3_model.golden.compare import verify_golden_command

        return verify_golden_command(args)
    import torch

    from dsv3_model.hf_bridge import load_hf_causal_lm
    from dsv3_model.loading import load_causal_lm
    from dsv3_model.verify import verify_against_hf

    model = load_causal_lm(args.model, dtype=torch.float32, include_mtp=False)
    hf_model = load_hf_causal_lm(args.model)
    if args.prompt_ids is not None:
        prompt = _parse_ids(args.prompt_ids)[0]
    else:
        generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, model.config.vocab_size, (24,), generator=generator).tolist()
    report = verify_against_hf(model, hf_model, prompt, args.tokens, args.tolerance)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(report.format())
    return 0 if report.passed else 1

"""`dsv3 generate` and `dsv3 verify`: run a model, and match its logits against transformers."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsv3_config import PRESETS, ModelConfig, load_config, preset
from dsv3_model.cli.errors import DataError, UsageError
from dsv3_model.cli.options import (
    existing_directory,
    non_empty_text,
    non_negative_float,
    non_negative_int,
    positive_int,
    prompt_ids,
    seed,
    temperature,
    top_p,
)
from dsv3_model.cli.prompts import check_positions, check_prompt_ids
from dsv3_model.cli.resources import check_weights_fit
from dsv3_model.tokenizer import TOKENIZER_FILES, has_tokenizer, load_tokenizer

if TYPE_CHECKING:
    from dsv3_model.cpu_kernels import KernelChoice

DTYPES = ("float32", "bfloat16")
WEIGHTS = ("dequantized", "fp8-resident")  # dsv3_model.loading.WEIGHTS_MODES (not imported: it needs torch)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gen = subparsers.add_parser(
        "generate",
        help="generate text or token ids",
        description="Generate from a checkpoint or a preset's random weights. Prompt plus --max-new-tokens "
        "may not pass the model's max_position_embeddings unless --allow-long is given (then a warning).",
    )
    source = gen.add_mutually_exclusive_group()
    source.add_argument("--model", type=existing_directory, help="HF checkpoint directory (BF16 or FP8)")
    source.add_argument("--preset", choices=sorted(PRESETS), help="random weights of a preset (default: tiny)")
    prompt = gen.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", type=non_empty_text, help="text (needs a tokenizer in the model directory)")
    prompt.add_argument(
        "--prompt-ids", type=prompt_ids, help="comma-separated token ids; ';' separates prompts of a batch"
    )
    gen.add_argument("--max-new-tokens", type=positive_int, default=16, help="tokens to generate, >= 1 (default 16)")
    gen.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy (default), else > 0")
    gen.add_argument("--top-k", type=non_negative_int, default=0, help="keep the k most likely tokens (0 = all)")
    gen.add_argument("--top-p", type=top_p, default=1.0, help="nucleus mass in (0, 1] (1 = all, the default)")
    gen.add_argument(
        "--seed", type=seed, default=0, help="sampling seed, and the weights' seed for --preset (0..2**64-1)"
    )
    gen.add_argument("--dtype", choices=DTYPES, default="float32")
    _add_weights_option(gen)
    gen.add_argument(
        "--compile-decode",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto (default): compile the decode step when this machine's recorded measurement says the run "
        "repays the compile (dsv3_model.decode_choice); on: compile (and record the measurement); off: eager",
    )
    gen.add_argument(
        "--kernels",
        choices=("measured", "reference"),
        help="measured (default, eager decode): each layer's oneDNN-prepacked CPU form where it measured faster "
        "on this machine; reference: plain layers (the default with --compile-decode on: packed ones do not compile)",
    )
    gen.add_argument("--mtp", choices=("keep", "skip"), default="keep", help="load the MTP layer when present")
    gen.add_argument(
        "--allow-long",
        action="store_true",
        help="run past max_position_embeddings (a warning instead of the error; quality is not guaranteed there)",
    )
    gen.set_defaults(handler=_generate)

    ver = subparsers.add_parser("verify", help="logit-matching report against transformers (exit 1 on failure)")
    ver.add_argument(
        "--model",
        type=existing_directory,
        required=True,
        help="HF checkpoint directory, BF16 or FP8 (transformers gets an FP8 one converted to fp32)",
    )
    ver.add_argument("--tokens", type=positive_int, default=32, help="tokens generated after the prompt, >= 1")
    ver.add_argument("--prompt-ids", type=prompt_ids, help="comma-separated prompt ids (default: 24 seeded random ids)")
    ver.add_argument(
        "--tolerance", type=non_negative_float, default=1e-4, help="max |logit difference| allowed (fp32), >= 0"
    )
    ver.add_argument("--json", action="store_true")
    _add_weights_option(ver)
    ver.add_argument("--golden", type=Path, help="compare with this golden file (dsv3 golden) instead of transformers")
    ver.set_defaults(handler=_verify)


def _add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="dequantized",
        help="dequantized (default): every weight in --dtype; fp8-resident: an FP8 checkpoint's weights stay "
        "FP8 with their block scales in memory (about half of bf16), dequantized per matmul, same logits",
    )


def _check_weights_option(weights: str, model_dir: Path | None, cfg: ModelConfig) -> None:
    """`--weights fp8-resident` needs an FP8 checkpoint: a UsageError before any weight is read."""
    if weights != "fp8-resident":
        return
    if model_dir is None:
        raise UsageError("--weights fp8-resident needs --model with an FP8 checkpoint (presets have no FP8 weights)")
    if cfg.quantization_config is None:
        raise UsageError(
            f"--weights fp8-resident: {model_dir} is not an FP8 checkpoint (its config.json has no "
            "quantization_config); drop the option"
        )


def _generate(args: argparse.Namespace) -> int:
    cfg = load_config(args.model) if args.model is not None else preset(args.preset or "tiny")
    _check_weights_option(args.weights, args.model, cfg)
    if args.prompt is not None:
        tokenizer = _text_tokenizer(args.model)
        prompts = [tokenizer.encode(args.prompt)]
        if not prompts[0]:
            raise UsageError(f"--prompt: {args.prompt!r} encodes to no tokens")
        check_prompt_ids(prompts, cfg.vocab_size, "the tokenizer's ids of --prompt")
    elif args.prompt_ids is not None:
        tokenizer, prompts = None, args.prompt_ids
        check_prompt_ids(prompts, cfg.vocab_size, "--prompt-ids")
    else:
        tokenizer, prompts = None, [[cfg.bos_token_id or 0, 5, 6, 7]]
        check_prompt_ids(prompts, cfg.vocab_size, "the default prompt (give --prompt-ids)")
    check_positions(prompts, args.max_new_tokens, cfg.max_position_embeddings, allow_long=args.allow_long)
    check_weights_fit(
        cfg, args.dtype, f"--model {args.model}" if args.model is not None else "--preset", args.weights
    )

    import torch

    from dsv3_model.generation import CompileChoice, generate
    from dsv3_model.loading import load_causal_lm, random_causal_lm
    from dsv3_model.sampling import SamplingParams

    dtype = getattr(torch, args.dtype)
    kernels = _kernels_option(args.kernels, args.compile_decode)
    if args.model is not None:
        model = load_causal_lm(
            args.model, dtype=dtype, include_mtp=args.mtp == "keep", weights=args.weights, kernels=kernels
        )
    else:
        model = random_causal_lm(args.preset or "tiny", seed=args.seed, dtype=dtype, kernels=kernels)
    sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    eos = model.config.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    compile_decode: CompileChoice = "auto" if args.compile_decode == "auto" else args.compile_decode == "on"
    result = generate(
        model, prompts, args.max_new_tokens, sampling, eos_token_ids=eos_ids, compile_decode=compile_decode
    )
    for prompt, tokens in zip(prompts, result.tokens, strict=True):
        if tokenizer is not None:
            print(tokenizer.decode(prompt + tokens))
        else:
            print(" ".join(str(t) for t in tokens))
    return 0


def _kernels_option(kernels: str | None, compile_decode: str) -> KernelChoice:
    """`--kernels`, defaulting to what `--compile-decode` can run: packed kernels do not compile."""
    if kernels == "measured" and compile_decode == "on":
        raise UsageError("--kernels measured runs prepacked eager kernels, which --compile-decode on cannot compile")
    if kernels is None:
        return "reference" if compile_decode == "on" else "measured"
    return "reference" if kernels == "reference" else "measured"


def _text_tokenizer(model_dir: Path | None) -> Any:
    """The model directory's tokenizer for `--prompt`, or a UsageError saying why there is none."""
    if model_dir is None:
        raise UsageError("--prompt needs a tokenizer, which --preset models have none of: use --prompt-ids")
    if not has_tokenizer(model_dir):
        raise UsageError(f"--prompt: {model_dir} has no tokenizer ({', '.join(TOKENIZER_FILES)}): use --prompt-ids")
    try:
        return load_tokenizer(model_dir)
    except ImportError as err:
        raise UsageError(f"--prompt: {err}") from err
    except (OSError, ValueError) as err:  # transformers' own errors for a damaged tokenizer file
        raise DataError(f"{model_dir}: the tokenizer does not load: {err}") from err


def _verify(args: argparse.Namespace) -> int:
    if args.weights == "fp8-resident":
        _check_weights_option(args.weights, args.model, load_config(args.model))
    if args.golden is not None:
        from dsv3_model.golden.compare import verify_golden_command

        return verify_golden_command(args)
    cfg = load_config(args.model)
    if args.prompt_ids is not None:
        if len(args.prompt_ids) > 1:
            raise UsageError("--prompt-ids: verify takes one prompt (no ';')")
        check_prompt_ids(args.prompt_ids, cfg.vocab_size, "--prompt-ids")
    if importlib.util.find_spec("transformers") is None:
        raise UsageError("dsv3 verify needs transformers: pip install 'dsv3-model[hf]'")

    import torch

    from dsv3_model.hf_bridge import load_hf_causal_lm
    from dsv3_model.loading import load_causal_lm
    from dsv3_model.verify import verify_against_hf

    model = load_causal_lm(args.model, dtype=torch.float32, include_mtp=False, weights=args.weights)
    hf_model = load_hf_causal_lm(args.model)
    if args.prompt_ids is not None:
        prompt = args.prompt_ids[0]
    else:
        generator = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, model.config.vocab_size, (24,), generator=generator).tolist()
    report = verify_against_hf(model, hf_model, prompt, args.tokens, args.tolerance)
    return report.emit(args.json)

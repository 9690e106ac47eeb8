"""`dsv3 demo`: the main job end to end on the embedded `tiny` preset, on a fresh machine.

1. make a synthetic FP8 checkpoint in DeepSeek's published layout (with the MTP layer),
2. convert it to BF16 in HF layout, streaming,
3. generate from the FP8 checkpoint (dequantized while loading) and from the converted one,
4. verify the converted checkpoint against transformers and print the logit-matching report.
Exit code 0 only when verification passes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dsv3_config import PRESETS
from dsv3_model.cli.options import positive_int, seed


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = subparsers.add_parser("demo", help="make -> convert -> generate -> verify on a synthetic checkpoint")
    demo.add_argument("--workdir", type=Path, required=True, help="where the checkpoints are written")
    demo.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    demo.add_argument("--tokens", type=positive_int, default=32, help="tokens generated and verified, >= 1")
    demo.add_argument("--seed", type=seed, default=0, help="weights' and prompt's seed, 0..2**64-1")
    demo.set_defaults(handler=_demo)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _demo(args: argparse.Namespace) -> int:
    import torch

    from dsv3_config import preset
    from dsv3_model.generation import generate
    from dsv3_model.hf_bridge import load_hf_causal_lm
    from dsv3_model.loading import load_causal_lm
    from dsv3_model.verify import verify_against_hf
    from dsv3_weights.convert import convert_checkpoint
    from dsv3_weights.synthetic import make_checkpoint

    cfg = preset(args.preset)
    fp8_dir, bf16_dir = args.workdir / f"{args.preset}-fp8", args.workdir / f"{args.preset}-bf16"
    start = _step(f"make-checkpoint --preset {args.preset} --fp8 -> {fp8_dir}")
    make_checkpoint(fp8_dir, cfg, fp8=True, seed=args.seed, progress=False)
    print(f"   {time.perf_counter() - start:.1f} s")

    start = _step(f"convert {fp8_dir} -> {bf16_dir} (BF16, streaming)")
    convert_checkpoint(fp8_dir, bf16_dir, progress=False)
    print(f"   {time.perf_counter() - start:.1f} s")

    prompt = [cfg.bos_token_id or 0, 17, 42, 99, 7, 3]
    start = _step(f"generate {args.tokens} tokens from the FP8 checkpoint and from the BF16 one (fp32 compute)")
    from_fp8 = generate(load_causal_lm(fp8_dir, dtype=torch.float32), [prompt], args.tokens).tokens[0]
    from_bf16 = generate(load_causal_lm(bf16_dir, dtype=torch.float32), [prompt], args.tokens).tokens[0]
    print(f"   prompt ids {prompt}")
    print(f"   from FP8:  {from_fp8}")
    print(f"   from BF16: {from_bf16}")
    print(f"   {time.perf_counter() - start:.1f} s")

    start = _step("verify the BF16 checkpoint against transformers (teacher-forced and free-running)")
    model = load_causal_lm(bf16_dir, dtype=torch.float32, include_mtp=False)
    generator = torch.Generator().manual_seed(args.seed)
    verify_prompt = torch.randint(0, cfg.vocab_size, (24,), generator=generator).tolist()
    report = verify_against_hf(model, load_hf_causal_lm(bf16_dir), verify_prompt, args.tokens, tolerance=1e-4)
    print(report.format())
    print(f"   {time.perf_counter() - start:.1f} s")
    return 0 if report.passed else 1

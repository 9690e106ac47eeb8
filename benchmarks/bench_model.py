"""Whole-model prefill and decode on the medium preset: dsv3 vs transformers, in fp32 and bf16.

Each (implementation, dtype) runs in its own subprocess so its peak RSS is its own. Reported per
case: prefill tokens/s (256 tokens), decode tokens/s (64 tokens after the prompt), peak RSS, cache
bytes per token, and achieved memory bandwidth = (weights read per token + cache read per token) x
decode tokens/s, against the machine's measured read bandwidth (the floor).

dsv3 runs `generate` itself (greedy, one row), four ways: `ours` eager (`compile_decode=False`) over the
plain layers (`kernels="reference"`), `ours-compiled` (`True`, plain layers; a warm-up generation compiles
first, and its compile seconds are reported apart as `compile_s`), `ours-default` (what the library does
by default: `random_causal_lm`'s measured CPU kernels, `dsv3_model.cpu_kernels`, and `generate`'s
`"auto"`: the path it took is printed and recorded as `default_compiled` 0/1; it reads the decode-choice
record that `ours-compiled` wrote into this bench's own cache folder, `DSV3_CACHE_DIR`), and
`ours-fp8-resident` (an FP8 checkpoint of the medium preset loaded with `weights="fp8-resident"`,
defaults), and `ours-fp8-compiled` (the same, `kernels="reference"`, compiled decode step: the FP8 bytes
decoded inside the fused one-row products, `dsv3_model.row_products`). Decode tokens/s is 1 / the median
of the per-step times of two greedy generations (each step
timed on its own: ours by `generate` (`GenerationResult.step_seconds`), transformers between two calls of
a logits processor), so a neighbour's burst on this shared host moves a few steps, not the result;
prefill is the median of three.

Each (implementation, dtype) child runs `--rounds` times (default 3), the children taking turns, and every
value is the median over the rounds; the 1-minute load average at each child's start is printed beside its
decode rate and recorded (median), with the CPU's flags and the thread count, since the host is shared.

Usage: python benchmarks/bench_model.py --out FILE.json [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    measured_read_bandwidth,
    median_seconds,
    peak_rss_bytes,
    record,
    whole_model_case,
    whole_model_records,
    write_records,
)

BENCH = "model"
IMPLS = ("ours", "ours-compiled", "ours-default", "ours-fp8-resident", "ours-fp8-compiled", "transformers")
COMPILE_CHOICE = {
    "ours": False,
    "ours-compiled": True,
    "ours-default": "auto",
    "ours-fp8-resident": "auto",
    "ours-fp8-compiled": True,
}
KERNELS = {
    "ours": "reference",
    "ours-compiled": "reference",
    "ours-default": "measured",
    "ours-fp8-resident": "measured",
    "ours-fp8-compiled": "reference",
}


def _models(dtype: torch.dtype, impl: str, fp8_dir: str | None):
    from dsv3_config import count_params, preset
    from dsv3_model.loading import load_causal_lm, random_causal_lm

    cfg = preset("medium")
    if impl.startswith("ours-fp8"):
        if fp8_dir is None:
            raise ValueError(f"{impl} needs the FP8 checkpoint directory")
        model = load_causal_lm(fp8_dir, dtype=dtype, include_mtp=False, weights="fp8-resident", kernels=KERNELS[impl])
    elif impl.startswith("ours"):  # the default loads the measured kernels; eager and compiled the plain ones
        model = random_causal_lm("medium", seed=0, dtype=dtype, kernels=KERNELS[impl])
    else:
        from dsv3_testing.hf_reference import hf_causal_lm

        model = hf_causal_lm(cfg, seed=0, dtype=dtype)
    return cfg, model, count_params(cfg)


def _weight_bytes_per_token(cfg: Any, activated: int, dtype: torch.dtype, impl: str) -> float:
    """Weights read per decoded token: every activated parameter once in the model dtype; with FP8
    resident the quantized ones at 1 byte and the lm_head (which checkpoints keep in BF16 and which
    dominates the rest of what stays dense) as stored, 2 bytes."""
    if not impl.startswith("ours-fp8"):
        return activated * dtype.itemsize
    lm_head = cfg.vocab_size * cfg.hidden_size
    return (activated - lm_head) * 1 + lm_head * min(dtype.itemsize, 2)


def run_one(impl: str, dtype_name: str, prompt_len: int, new_tokens: int, fp8_dir: str | None) -> dict[str, float]:
    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    cfg, model, counts = _models(dtype, impl, fp8_dir)
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    extra: dict[str, float] = {}
    with torch.inference_mode():
        if impl.startswith("ours"):
            from dsv3_model.generation import generate

            def prefill() -> object:
                caches = model.new_cache(1, prompt_len)
                return model(ids, None, caches, None)

            def decode_steps() -> list[float]:
                result = generate(model, [ids[0].tolist()], new_tokens, compile_decode=COMPILE_CHOICE[impl])
                extra["default_compiled"] = float(result.decode_path != "eager")
                return list(result.step_seconds)

            cache_bytes = cfg.latent_cache_width * cfg.num_hidden_layers * dtype.itemsize
        else:

            def prefill() -> object:
                return model(ids, use_cache=True)

            def decode_steps() -> list[float]:
                return _hf_step_seconds(model, ids, new_tokens)

            # transformers 4.57 caches K and V per head (nope+rope and v); 5.x caches the latent
            from dsv3_testing.hf_reference import transformers_major

            if transformers_major() >= 5:
                cache_bytes = cfg.latent_cache_width * cfg.num_hidden_layers * dtype.itemsize
            else:
                heads = cfg.num_attention_heads
                cache_bytes = heads * (cfg.qk_head_dim + cfg.v_head_dim) * cfg.num_hidden_layers * dtype.itemsize
        prefill_s = median_seconds(prefill, repeats=3)
        warmup = decode_steps()  # compiles ours-compiled's step: its first step is the compile
        if COMPILE_CHOICE.get(impl) is True:
            extra["compile_s"] = warmup[0] - statistics.median(warmup[1:])
        decode_s = statistics.median(decode_steps() + decode_steps())
    weight_bytes_per_token = _weight_bytes_per_token(cfg, counts.activated, dtype, impl)
    mean_context = prompt_len + new_tokens / 2
    bytes_per_token = weight_bytes_per_token + cache_bytes * mean_context
    return {
        "prefill_tok_s": prompt_len / prefill_s,
        "decode_tok_s": 1.0 / decode_s,
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "cache_bytes_per_token": cache_bytes,
        "achieved_gb_s": bytes_per_token / decode_s / 1e9,
        "bytes_per_token": bytes_per_token,
        **extra,
    }


def _hf_step_seconds(model: Any, ids_1P: torch.Tensor, new_tokens: int) -> list[float]:
    """Seconds between consecutive calls of a logits processor in transformers' greedy `generate`: one
    decode step each (its forward, cache update and token choice)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            stamps.append(time.perf_counter())
            return scores

    model.generate(
        ids_1P,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        logits_processor=LogitsProcessorList([Stamp()]),
    )
    return [later - earlier for earlier, later in itertools.pairwise(stamps)]


def machine_line() -> str:
    """CPU model, the instruction-set flags that decide the matmul kernels, threads, load average."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in flags if f.startswith(("avx512_bf16", "avx512f", "amx", "avx_vnni", "avx512_vnni", "avx2"))]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"cpu {model}; flags {' '.join(sorted(wanted))}; threads 2; torch {torch.__version__}; load average {load}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "DTYPE"))
    parser.add_argument("--fp8-dir", help="(child) the FP8 checkpoint of the medium preset")
    args = parser.parse_args()
    prompt_len, new_tokens = (32, 8) if args.quick else (256, 64)
    if args.child:
        print(json.dumps(run_one(*args.child, prompt_len, new_tokens, args.fp8_dir)))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    print(machine_line())
    bandwidth = measured_read_bandwidth()
    records = [record(BENCH, "machine", "memory", "read_bandwidth", bandwidth / 1e9, "GB/s")]
    with tempfile.TemporaryDirectory(prefix="bench-model-") as work:
        runs = _run_children(args.quick, rounds, Path(work))
    for (dtype_name, impl), results in runs.items():
        case = whole_model_case(dtype_name, prompt_len, new_tokens)
        records += whole_model_records(BENCH, case, impl, results, bandwidth)
        result = {key: statistics.median(r[key] for r in results) for key in results[0]}
        if "compile_s" in result:
            records.append(record(BENCH, case, impl, "compile_s", result["compile_s"], "s"))
        if impl == "ours-default":
            records.append(record(BENCH, case, impl, "default_compiled", result["default_compiled"], "0/1"))
    write_records(args.out, records)
    print(machine_line())
    return 0


def run_child(impl: str, dtype_name: str, fp8_dir: Path, quick: bool, cache: Path) -> dict[str, float]:
    """This script's child for (`impl`, `dtype_name`) in a process of its own (its peak RSS its own), its
    decode-choice records in `cache` (`DSV3_CACHE_DIR`); its result, with the load average at its start.
    bench_llamacpp.py runs it too, right after each llama.cpp child."""
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", impl, dtype_name, "--fp8-dir", str(fp8_dir)]
    env = {**os.environ, "DSV3_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [*cmd, *(["--quick"] if quick else [])], check=True, capture_output=True, text=True, env=env
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["load_average_1min"] = load_before
    return result


def _run_children(quick: bool, rounds: int, work: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """Every (dtype, implementation) child, `rounds` times, taking turns so that a neighbour's load (this
    host is shared) falls on all of them alike. The children share one decode-choice cache folder (what
    `ours-compiled` measures, `ours-default` reads) and one FP8 checkpoint of the medium preset."""
    from dsv3_config import preset
    from dsv3_weights.synthetic import make_checkpoint

    fp8_dir = make_checkpoint(work / "medium-fp8", preset("medium"), fp8=True, seed=0, progress=False)
    cache = work / "decode-cache"
    runs: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for _ in range(rounds):
        for dtype_name in ("float32", "bfloat16"):
            for impl in IMPLS:
                result = run_child(impl, dtype_name, fp8_dir, quick, cache)
                runs[(dtype_name, impl)].append(result)
                decode, load_before = result["decode_tok_s"], result["load_average_1min"]
                note = f"  compile {result['compile_s']:.1f} s" if "compile_s" in result else ""
                if impl.startswith("ours") and impl != "ours" and "default_compiled" in result:
                    note += "  (compiled)" if result["default_compiled"] else "  (eager)"
                print(
                    f"  {dtype_name:<9} {impl:<18} decode {decode:7.1f} tok/s  load {load_before:.1f}{note}", flush=True
                )
    return runs


if __name__ == "__main__":
    sys.exit(main())

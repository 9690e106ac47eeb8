"""Whole-model prefill and decode on the medium preset: dsv3 vs transformers, in fp32 and bf16.

Each (implementation, dtype) runs in its own subprocess so its peak RSS is its own. Reported per
case: prefill tokens/s (256 tokens), decode tokens/s (64 tokens after the prompt), peak RSS, cache
bytes per token, and achieved memory bandwidth = (weights read per token + cache read per token) x
decode tokens/s, against the machine's measured read bandwidth (the floor).

`ours` is the eager model (what `generate` runs by default), `ours-compiled` the same with
`compile_decode=True` (compile time excluded: `median_seconds` warms up first).

Usage: python benchmarks/bench_model.py --out FILE.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import measured_read_bandwidth, median_seconds, peak_rss_bytes, record, write_records

BENCH = "model"


def _models(dtype: torch.dtype, impl: str):
    from dsv3_config import count_params, preset
    from dsv3_model.causal_lm import DeepseekForCausalLM
    from dsv3_model.random_init import init_random_weights

    cfg = preset("medium")
    if impl.startswith("ours"):
        model = DeepseekForCausalLM(cfg).eval()
        init_random_weights(model, seed=0)
        model = model.to(dtype)
    else:
        from dsv3_testing.hf_reference import hf_causal_lm

        model = hf_causal_lm(cfg, seed=0, dtype=dtype)
    return cfg, model, count_params(cfg)


def run_one(impl: str, dtype_name: str, prompt_len: int, new_tokens: int) -> dict[str, float]:
    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    cfg, model, counts = _models(dtype, impl)
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if impl.startswith("ours"):
            from dsv3_model.generation import generate

            compiled = impl == "ours-compiled"  # the decode step under torch.compile, compiled in the warm-up

            def prefill() -> object:
                caches = model.new_cache(1, prompt_len)
                return model(ids, None, caches, None)

            def full() -> object:
                return generate(model, [ids[0].tolist()], new_tokens, compile_decode=compiled)

            cache_bytes = cfg.latent_cache_width * cfg.num_hidden_layers * dtype.itemsize
        else:

            def prefill() -> object:
                return model(ids, use_cache=True)

            def full() -> object:
                return model.generate(
                    ids,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )

            # transformers 4.57 caches K and V per head (nope+rope and v); 5.x caches the latent
            from dsv3_testing.hf_reference import transformers_major

            if transformers_major() >= 5:
                cache_bytes = cfg.latent_cache_width * cfg.num_hidden_layers * dtype.itemsize
            else:
                heads = cfg.num_attention_heads
                cache_bytes = heads * (cfg.qk_head_dim + cfg.v_head_dim) * cfg.num_hidden_layers * dtype.itemsize
        prefill_s = median_seconds(prefill, repeats=3)
        full_s = median_seconds(full, repeats=2)
    decode_s = max(full_s - prefill_s, 1e-9) / new_tokens
    weight_bytes_per_token = counts.activated * dtype.itemsize
    mean_context = prompt_len + new_tokens / 2
    bytes_per_token = weight_bytes_per_token + cache_bytes * mean_context
    return {
        "prefill_tok_s": prompt_len / prefill_s,
        "decode_tok_s": 1.0 / decode_s,
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "cache_bytes_per_token": cache_bytes,
        "achieved_gb_s": bytes_per_token / decode_s / 1e9,
        "bytes_per_token": bytes_per_token,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "DTYPE"))
    args = parser.parse_args()
    prompt_len, new_tokens = (32, 8) if args.quick else (256, 64)
    if args.child:
        print(json.dumps(run_one(*args.child, prompt_len, new_tokens)))
        return 0
    bandwidth = measured_read_bandwidth()
    records = [record(BENCH, "machine", "memory", "read_bandwidth", bandwidth / 1e9, "GB/s")]
    for dtype_name in ("float32", "bfloat16"):
        for impl in ("ours", "ours-compiled", "transformers"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", impl, dtype_name, *(["--quick"] if args.quick else [])],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            case = f"medium {dtype_name} p{prompt_len}+d{new_tokens}"
            floor_tok_s = bandwidth / result["bytes_per_token"]
            records += [
                record(BENCH, case, impl, "prefill_tok_s", result["prefill_tok_s"], "tok/s"),
                record(BENCH, case, impl, "decode_tok_s", result["decode_tok_s"], "tok/s"),
                record(BENCH, case, impl, "peak_rss", result["peak_rss_gb"], "GB"),
                record(BENCH, case, impl, "cache_bytes_per_token", result["cache_bytes_per_token"], "B"),
                record(BENCH, case, impl, "achieved_bandwidth", result["achieved_gb_s"], "GB/s"),
                record(BENCH, case, impl, "decode_vs_bandwidth_floor", floor_tok_s / result["decode_tok_s"], "x"),
            ]
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

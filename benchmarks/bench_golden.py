"""`dsv3 golden` memory and speed: streamed weights under `--max-memory 1GB` vs loading the whole model.

A synthetic FP8 checkpoint (`make_checkpoint`, 128 x 128 blocks) of 8 MoE layers x 128 experts of
3 x 1024 x 2048 (6.4 GB; `--quick`: 2 x 32, 0.4 GB) is written under `.bench/golden/` (git-ignored,
removed afterwards). A token uses 4 of 128 experts per layer (3%). Jobs run in child processes that
report their own peak RSS (VmHWM); the parent also polls RSS and stops a child at a guard:

- `streamed`: `golden_greedy` in fp32, `max_memory` 1 GiB, 32 greedy tokens after a 64-token prompt,
  then the same prompt with 1 token (the prefill alone), so the decode steps' time and bytes are the
  difference divided by 31 (a decode step's share of `--max-memory` misses is re-read).
- `in_memory`: `load_causal_lm` in fp32 (what `dsv3 verify` does), stopped at the guard (8 GiB) long
  before its 25.8 GB of dequantized weights; its peak is then reported as "at least" the guard.
- `page_cache_read`: reading the FP8 bytes one decoded token needs (non-expert weights, the chosen
  experts) from the cached shard files with `readinto`: the floor for a step that re-reads everything.
  Reported ratio: streamed time per token / that read time.

Usage: python benchmarks/bench_golden.py --out FILE.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import big_expert_fp8_config, record, run_with_rss_guard, write_records

BENCH = "golden"
ROOT = Path(__file__).resolve().parent.parent / ".bench" / "golden"
MIB, GIB = 1024**2, 1024**3
MAX_MEMORY = GIB
GUARD = 8 * GIB
PROMPT_LEN, NEW_TOKENS = 64, 32


def job_streamed(src: Path, prompt_len: int, new_tokens: int) -> dict[str, float]:
    from dsv3_model.golden.run import golden_greedy

    prompt = [(7 * i + 3) % 8000 for i in range(prompt_len)]
    full = golden_greedy(src, [prompt], new_tokens, max_memory=MAX_MEMORY)
    prefill = golden_greedy(src, [prompt], 1, max_memory=MAX_MEMORY)
    steps = new_tokens - 1
    return {
        "seconds": full.summary.seconds,
        "bytes_read": full.summary.bytes_read,
        "prefill_seconds": prefill.summary.seconds,
        "step_seconds": (full.summary.seconds - prefill.summary.seconds) / steps,
        "step_bytes": (full.summary.bytes_read - prefill.summary.bytes_read) / steps,
        "peak_resident_weights": full.summary.peak_resident_weights,
    }


def job_in_memory(src: Path, prompt_len: int, new_tokens: int) -> dict[str, float]:
    import torch

    from dsv3_model.loading import load_causal_lm

    start = time.perf_counter()
    load_causal_lm(src, dtype=torch.float32, include_mtp=False)
    return {"seconds": time.perf_counter() - start}


def run_child(job: str, src: Path, prompt_len: int, new_tokens: int) -> None:
    result = globals()[f"job_{job}"](src, prompt_len, new_tokens)
    from dsv3_weights.progress import peak_rss_bytes

    print(json.dumps({**result, "peak_rss": peak_rss_bytes()[0]}))


def page_cache_read_seconds(src: Path, nbytes: int) -> float:
    """Seconds to read `nbytes` from the checkpoint's files, already in the page cache (median of 3)."""
    buffer = bytearray(64 * MIB)
    files = sorted(src.glob("*.safetensors"))
    times = []
    for _ in range(3):
        left = nbytes
        start = time.perf_counter()
        for path in files:
            with path.open("rb", buffering=0) as f:
                while left > 0 and (n := f.readinto(memoryview(buffer)[: min(left, len(buffer))])):
                    left -= n
            if left <= 0:
                break
        times.append(time.perf_counter() - start)
    return sorted(times)[1]


def token_bytes(src: Path) -> int:
    """FP8 file bytes one decoded token needs: every non-expert tensor but the embedding (one row of it),
    plus `num_experts_per_tok` experts per MoE layer (weights and scales)."""
    from dsv3_weights import CheckpointReader

    with CheckpointReader(src) as reader:
        cfg = reader.config()
        dense = sum(reader.nbytes(n) for n in reader if ".experts." not in n and "embed_tokens" not in n)
        expert = sum(reader.nbytes(n) for n in reader if f".layers.{cfg.num_hidden_layers - 1}.mlp.experts.0." in n)
        row = reader.entry("model.embed_tokens.weight").row_bytes
        moe_layers = cfg.num_hidden_layers - cfg.first_k_dense_replace
        return dense + row + moe_layers * cfg.num_experts_per_tok * expert


def dequantized_bytes(src: Path) -> int:
    import torch

    from dsv3_weights import CheckpointReader

    with CheckpointReader(src) as reader:
        return sum(
            reader.nbytes(n) * (4 if reader.dtype(n) == torch.float8_e4m3fn else 2)
            for n in reader
            if not n.endswith("_scale_inv")
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("JOB", "SRC", "PROMPT", "TOKENS"))
    args = parser.parse_args()
    if args.child:
        job, src, prompt_len, tokens = args.child
        run_child(job, Path(src), int(prompt_len), int(tokens))
        return
    from dsv3_weights import make_checkpoint

    layers, experts = (2, 32) if args.quick else (8, 128)
    case = f"{layers}x{experts}_experts"
    src = ROOT / case
    shutil.rmtree(ROOT, ignore_errors=True)
    make_checkpoint(src, big_expert_fp8_config(layers, experts), fp8=True, seed=0, progress=False)
    size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    dequantized = dequantized_bytes(src)
    print(f"{case}: {size / GIB:.2f} GiB FP8, {dequantized / GIB:.2f} GiB dequantized fp32", file=sys.stderr)
    records: list[dict[str, Any]] = [
        record(BENCH, case, "synthetic", "checkpoint_size", size / MIB, "MiB"),
        record(BENCH, case, "synthetic", "dequantized_fp32_size", dequantized / MIB, "MiB"),
    ]
    child = [sys.executable, __file__, "--child"]
    from dsv3_model.golden.threads import prefer_passive_omp_wait

    prefer_passive_omp_wait()  # the children inherit it, as `dsv3 golden` sets it before torch loads
    streamed = run_with_rss_guard([*child, "streamed", str(src), str(PROMPT_LEN), str(NEW_TOKENS)], GUARD)
    in_memory = run_with_rss_guard([*child, "in_memory", str(src), str(PROMPT_LEN), str(NEW_TOKENS)], GUARD)
    assert streamed.result is not None, "the streamed job passed the memory guard"
    s = streamed.result
    needed = token_bytes(src)
    read_s = page_cache_read_seconds(src, needed)
    in_memory_peak = GUARD if in_memory.result is None else max(in_memory.result["peak_rss"], in_memory.polled_peak_rss)
    records += [
        record(BENCH, case, "streamed_1GiB", "peak_rss", max(s["peak_rss"], streamed.polled_peak_rss) / MIB, "MiB"),
        record(BENCH, case, "streamed_1GiB", "peak_resident_weights", s["peak_resident_weights"] / MIB, "MiB"),
        record(BENCH, case, "streamed_1GiB", "seconds_64_prompt_32_tokens", s["seconds"], "s"),
        record(BENCH, case, "streamed_1GiB", "prefill_seconds", s["prefill_seconds"], "s"),
        record(BENCH, case, "streamed_1GiB", "seconds_per_token", s["step_seconds"], "s"),
        record(BENCH, case, "streamed_1GiB", "bytes_read_per_token", s["step_bytes"] / MIB, "MiB"),
        record(BENCH, case, "streamed_1GiB", "bytes_needed_per_token", needed / MIB, "MiB"),
        record(BENCH, case, "page_cache_read", "seconds_for_bytes_needed", read_s, "s"),
        record(BENCH, case, "streamed_1GiB", "token_time_vs_page_cache_read", s["step_seconds"] / read_s, "x"),
        record(
            BENCH, case, "in_memory", "peak_rss", in_memory_peak / MIB, "MiB (at least)" if in_memory.stopped else "MiB"
        ),
        record(BENCH, case, "in_memory", "stopped_at_memory_guard", float(in_memory.stopped), "bool"),
    ]
    write_records(args.out, records)
    shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()

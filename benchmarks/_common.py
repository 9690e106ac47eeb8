"""Shared benchmark plumbing: timing, memory bandwidth, peak RSS, and the record format."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def transformers_version() -> str:
    try:
        import transformers
    except ImportError:
        return "none"
    return str(transformers.__version__)


def record(bench: str, case: str, impl: str, metric: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "bench": bench,
        "case": case,
        "impl": impl,
        "metric": metric,
        "value": float(value),
        "unit": unit,
        "transformers": transformers_version(),
    }


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


BENCH_THREADS = 2  # every engine in the benchmarks runs on this many threads


def measured_read_bandwidth(num_bytes: int = 1 << 30, threads: int = BENCH_THREADS) -> float:
    """Bytes per second of a full read (a sum) over a buffer far larger than the caches, on `threads`
    threads like the engines measured against it: the floor of a decode step is its bytes over this."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer = torch.ones(num_bytes // 4, dtype=torch.float32)
        seconds = median_seconds(lambda: buffer.sum(), repeats=5)
    finally:
        torch.set_num_threads(previous)
    return num_bytes / seconds


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags from /proc/cpuinfo (empty where there is none): they decide which
    kernels every engine picks, so a figure means little without them."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))


def has_amx() -> bool:
    return any(flag.startswith("amx") for flag in cpu_flags())


def peak_rss_bytes() -> int:
    """This process's peak resident set size: VmHWM of /proc/self/status where there is one, since Linux's
    `ru_maxrss` survives fork and exec (a child started by a parent that once held 1.3 GB reports at least
    1.3 GB); elsewhere `ru_maxrss` (kilobytes)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_records(path: Path | None, records: list[dict[str, Any]]) -> None:
    for r in records:
        print(f"{r['bench']:<10} {r['case']:<28} {r['impl']:<26} {r['metric']:<22} {r['value']:>14.6g} {r['unit']}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(path)


def big_expert_fp8_config(moe_layers: int, experts: int) -> Any:
    """Experts of 3 x 1024 x 2048 FP8 (6.3 MB each) dominate: size ~ moe_layers x experts x 6.3 MB."""
    from dsv3_config import Fp8BlockQuantization, preset

    return preset("tiny").replace(
        hidden_size=1024,
        intermediate_size=4096,
        moe_intermediate_size=2048,
        n_routed_experts=experts,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=4,
        num_hidden_layers=moe_layers + 1,
        first_k_dense_replace=1,
        num_nextn_predict_layers=0,
        vocab_size=8000,
        quantization_config=Fp8BlockQuantization(quant_method="fp8"),
    )


def whole_model_case(dtype_name: str, prompt_len: int, new_tokens: int) -> str:
    """The case name of a whole-model run on the medium preset ("medium float32 p256+d64"), one for
    bench_model.py and bench_llamacpp.py so that `report.py` pairs their rows."""
    return f"medium {dtype_name} p{prompt_len}+d{new_tokens}"


def whole_model_records(
    bench: str, case: str, impl: str, runs: list[dict[str, float]], bandwidth: float
) -> list[dict[str, Any]]:
    """One whole-model run's records (bench_model.py, bench_llamacpp.py), each value the median over the
    rounds' child results; the decode floor is the step's bytes over the measured read `bandwidth`."""
    result = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    floor_tok_s = bandwidth / result["bytes_per_token"]
    return [
        record(bench, case, impl, "prefill_tok_s", result["prefill_tok_s"], "tok/s"),
        record(bench, case, impl, "decode_tok_s", result["decode_tok_s"], "tok/s"),
        record(bench, case, impl, "peak_rss", result["peak_rss_gb"], "GB"),
        record(bench, case, impl, "cache_bytes_per_token", result["cache_bytes_per_token"], "B"),
        record(bench, case, impl, "achieved_bandwidth", result["achieved_gb_s"], "GB/s"),
        record(bench, case, impl, "decode_vs_bandwidth_floor", floor_tok_s / result["decode_tok_s"], "x"),
        record(bench, case, impl, "load_average_1min", result["load_average_1min"], "procs"),
    ]


def interleaved_medians(steps: dict[str, Callable[[], object]], *, warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per step, the implementations taking turns so that a noisy neighbour on a shared
    host slows them alike and the ratios stay meaningful."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass(frozen=True)
class GuardedRun:
    """A child benchmark's last stdout line (JSON), its polled peak RSS, and whether the guard stopped it."""

    result: dict[str, Any] | None
    polled_peak_rss: int
    stopped: bool


def run_with_rss_guard(cmd: list[str], guard_bytes: int) -> GuardedRun:
    """Run `cmd` (2 threads), polling its RSS every 50 ms and killing it past `guard_bytes` so a
    load-everything competitor cannot take the machine down. Raises if it fails on its own."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    proc = psutil.Process(child.pid)
    polled, stopped = 0, False
    while child.poll() is None:
        try:
            polled = max(polled, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if polled > guard_bytes:
            child.kill()
            stopped = True
        time.sleep(0.05)
    out, _ = child.communicate()
    if stopped:
        return GuardedRun(None, polled, True)
    if child.returncode != 0:
        raise RuntimeError(f"{cmd[2:4]} failed with exit code {child.returncode}")
    return GuardedRun(json.loads(out.strip().splitlines()[-1]), polled, False)

"""FP8 -> BF16 checkpoint conversion: dsv3's streaming converter vs plain I/O vs load-everything.

Synthetic FP8 checkpoints (`dsv3_weights.make_checkpoint`, 128 x 128 blocks, big experts so they are
quick to make) of about 2 GB and 4 GB (`--quick`: 200 MB) are written under `.bench/convert/` (git-ignored,
removed afterwards). Each job then runs in its own subprocess, which reports its own peak RSS
(`getrusage`) and wall time; the parent also polls the child's RSS and stops it at a memory guard so the
load-everything job cannot exhaust a shared machine (a stopped job is reported as "at least" the guard).

- `dsv3_convert`: `convert_checkpoint` (one process, row-chunked dequantization, fsync per shard);
  `dsv3_convert_2_workers`: the same with `workers=2` (peak RSS = parent + 2 x the largest worker).
- Every job writes output shards of 1 GiB.
- `plain_io`: read every input byte and write the same number of output bytes in as many files, fsync'ed:
  the floor any converter pays on this disk.
- `load_everything`: the NxDI contrib port's approach (`modeling_deepseek.py:62-105`): load the whole
  state dict, dequantize every FP8 weight in fp32 (scales repeated to full size), cast to BF16, then save.

The input was just written, so all jobs read it from the page cache alike. `plain_io` and `dsv3_convert`
run alternately three times each (median reported) since the machine is shared; the other two run once.
Ratios reported: time vs plain I/O, peak RSS vs load-everything, and our peak RSS at 4 GB vs 2 GB.

Usage: python benchmarks/bench_convert.py --out FILE.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import big_expert_fp8_config as bench_config
from _common import record, run_with_rss_guard, write_records

BENCH = "convert"
ROOT = Path(__file__).resolve().parent.parent / ".bench" / "convert"
MIB = 1024**2
IMPLS = ("plain_io", "dsv3_convert", "dsv3_convert_2_workers", "load_everything")
OUT_SHARD_BYTES = 1024**3  # output shards of 1 GiB for every job, so 2 workers have shards to share


# ---- the jobs (run inside a child process) -----------------------------------------------------------


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def job_dsv3_convert(src: Path, dst: Path, out_bytes: int, workers: int = 1) -> tuple[int, int]:
    from dsv3_weights import convert_checkpoint

    summary = convert_checkpoint(src, dst, workers=workers, max_shard_bytes=OUT_SHARD_BYTES, progress=False)
    return summary.bytes_in, summary.bytes_out


def job_dsv3_convert_2_workers(src: Path, dst: Path, out_bytes: int) -> tuple[int, int]:
    return job_dsv3_convert(src, dst, out_bytes, workers=2)


def job_plain_io(src: Path, dst: Path, out_bytes: int) -> tuple[int, int]:
    block = bytearray(64 * MIB)
    read = 0
    for path in _files(src):
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(block):
                read += n
    files = max(1, -(-out_bytes // OUT_SHARD_BYTES))
    dst.mkdir(parents=True)
    written = 0
    for i in range(files):
        target = out_bytes // files + (out_bytes % files if i == files - 1 else 0)
        with (dst / f"out{i}.bin").open("wb", buffering=0) as f:
            while target > 0:
                n = f.write(memoryview(block)[: min(target, len(block))])
                target -= n
                written += n
            os.fsync(f.fileno())
    return read, written


def job_load_everything(src: Path, dst: Path, out_bytes: int) -> tuple[int, int]:
    import torch
    from safetensors.torch import load_file, save_file

    from dsv3_weights.writer import OutputTensor, plan_shards, shard_file_name

    state: dict[str, torch.Tensor] = {}
    for path in _files(src):
        state.update(load_file(path))
    read = sum(t.numel() * t.element_size() for t in state.values())
    for scale_key in [k for k in state if k.endswith(".weight_scale_inv")]:  # contrib modeling_deepseek.py:77-97
        weight_key = scale_key.replace(".weight_scale_inv", ".weight")
        weight, scale_inv = state[weight_key], state.pop(scale_key)
        rows, cols = weight.shape
        expanded = scale_inv.repeat_interleave(128, dim=0).repeat_interleave(128, dim=1)
        state[weight_key] = (weight.to(torch.float32) * expanded[:rows, :cols].to(torch.float32)).to(torch.bfloat16)
    dst.mkdir(parents=True)
    tensors = [OutputTensor(k, tuple(t.shape), t.dtype) for k, t in state.items()]
    shards = plan_shards(tensors, OUT_SHARD_BYTES)
    for i, shard in enumerate(shards):
        save_file(
            {t.name: state[t.name] for t in shard}, dst / shard_file_name(i, len(shards)), metadata={"format": "pt"}
        )
    return read, sum(t.nbytes for t in tensors)


def run_child(impl: str, src: Path, dst: Path, out_bytes: int) -> None:
    start = time.perf_counter()
    read, written = globals()[f"job_{impl}"](src, dst, out_bytes)
    seconds = time.perf_counter() - start
    from dsv3_weights.progress import peak_rss_bytes

    own, workers = peak_rss_bytes()  # own: VmHWM (ru_maxrss would include the parent's RSS at fork)
    peak = own + (2 * workers if impl.endswith("2_workers") else 0)  # upper bound: both workers at their peak at once
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "bytes_in": read, "bytes_out": written}))


# ---- the parent -------------------------------------------------------------------------------------


def measure(impl: str, src: Path, out_bytes: int, guard_bytes: int) -> dict[str, float]:
    dst = src.parent / f"out-{impl}"
    shutil.rmtree(dst, ignore_errors=True)
    run = run_with_rss_guard(
        [sys.executable, __file__, "--child", impl, str(src), str(dst), str(out_bytes)], guard_bytes
    )
    shutil.rmtree(dst, ignore_errors=True)
    if run.result is None:
        return {"seconds": float("nan"), "peak_rss": float(guard_bytes), "stopped": 1.0}
    peak = float(max(run.result["peak_rss"], run.polled_peak_rss))
    return {"seconds": run.result["seconds"], "peak_rss": peak, "stopped": 0.0}


def expected_out_bytes(src: Path) -> int:
    import torch

    from dsv3_weights import CheckpointReader

    with CheckpointReader(src) as reader:
        return sum(
            reader.nbytes(n) * (2 if reader.dtype(n) == torch.float8_e4m3fn else 1)
            for n in reader
            if not n.endswith("_scale_inv")
        )


def run_case(
    case: str, cfg: Any, guard_bytes: int, repeats: int
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    from dsv3_weights import make_checkpoint

    src = ROOT / case / "src"
    shutil.rmtree(ROOT / case, ignore_errors=True)
    start = time.perf_counter()
    make_checkpoint(src, cfg, fp8=True, seed=0, max_shard_bytes=1 << 30, progress=False)
    make_seconds = time.perf_counter() - start
    in_bytes = sum(p.stat().st_size for p in _files(src))
    out_bytes = expected_out_bytes(src)
    print(f"{case}: made {in_bytes / MIB:.0f} MiB FP8 in {make_seconds:.1f} s", file=sys.stderr)
    records = [record(BENCH, case, "synthetic", "input_size", in_bytes / MIB, "MiB")]
    runs: dict[str, list[dict[str, float]]] = {impl: [] for impl in IMPLS}
    for _ in range(repeats):  # the two fast jobs alternate, so load from elsewhere hits both alike
        for impl in ("plain_io", "dsv3_convert"):
            runs[impl].append(measure(impl, src, out_bytes, guard_bytes))
    for impl in ("dsv3_convert_2_workers", "load_everything"):
        runs[impl].append(measure(impl, src, out_bytes, guard_bytes))
    results = {}
    for impl in IMPLS:
        results[impl] = r = {
            "seconds": statistics.median(run["seconds"] for run in runs[impl]),
            "peak_rss": max(run["peak_rss"] for run in runs[impl]),
            "stopped": max(run["stopped"] for run in runs[impl]),
        }
        records += [
            record(BENCH, case, impl, "seconds", r["seconds"], f"s (median of {len(runs[impl])})"),
            record(BENCH, case, impl, "peak_rss", r["peak_rss"] / MIB, "MiB"),
            record(BENCH, case, impl, "stopped_at_memory_guard", r["stopped"], "bool"),
        ]
    ours, plain, everything = results["dsv3_convert"], results["plain_io"], results["load_everything"]
    records += [
        record(BENCH, case, "dsv3_convert", "time_vs_plain_io", ours["seconds"] / plain["seconds"], "x"),
        record(BENCH, case, "dsv3_convert", "throughput", in_bytes / MIB / ours["seconds"], "MiB/s in"),
        record(
            BENCH,
            case,
            "dsv3_convert_2_workers",
            "time_vs_plain_io",
            results["dsv3_convert_2_workers"]["seconds"] / plain["seconds"],
            "x",
        ),
        record(
            BENCH,
            case,
            "dsv3_convert",
            "peak_rss_vs_load_everything",
            ours["peak_rss"] / everything["peak_rss"],
            "x (upper bound if stopped)" if everything["stopped"] else "x",
        ),
        record(BENCH, case, "load_everything", "time_vs_plain_io", everything["seconds"] / plain["seconds"], "x"),
    ]
    shutil.rmtree(ROOT / case, ignore_errors=True)
    return records, results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("IMPL", "SRC", "DST", "OUT_BYTES"))
    args = parser.parse_args()
    if args.child:
        impl, src, dst, out_bytes = args.child
        run_child(impl, Path(src), Path(dst), int(out_bytes))
        return 0
    import torch

    torch.set_num_threads(2)
    # 2 layers x 16 experts ~ 200 MB; 2 x 160 ~ 2 GB; 4 x 160 ~ 4 GB
    cases = (
        {"fp8-200MB": bench_config(2, 16)}
        if args.quick
        else {"fp8-2GB": bench_config(2, 160), "fp8-4GB": bench_config(4, 160)}
    )
    guard = int(min(14 * 1024**3, psutil.virtual_memory().available - 3 * 1024**3))
    records: list[dict[str, Any]] = []
    ours_rss = []
    for case, cfg in cases.items():
        case_records, results = run_case(case, cfg, guard, repeats=3)
        records += case_records
        ours_rss.append(results["dsv3_convert"]["peak_rss"])
    if len(ours_rss) == 2:
        records.append(
            record(BENCH, "fp8-4GB vs fp8-2GB", "dsv3_convert", "peak_rss_growth", ours_rss[1] / ours_rss[0], "x")
        )
    shutil.rmtree(ROOT, ignore_errors=True)
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NxDI per-rank files from an FP8 checkpoint: `dsv3 shard` (streaming) vs NxDI's in-memory path.

A synthetic FP8 checkpoint (`dsv3_weights.make_checkpoint`, 128 x 128 blocks, big experts) of about 2 GB
(`--quick`: 200 MB) is written under `.bench/shard/` (git-ignored, removed afterwards). Each job runs in
its own subprocess and reports its peak RSS (`VmHWM`) and wall time; the parent also polls the child's RSS
and stops it at a memory guard (a stopped job is reported as "at least" the guard). Both write the tp=2
bf16 files `weights/tp{rank}_sharded_checkpoint.safetensors`.

- `dsv3_shard`: `write_per_rank_files` (what `dsv3 shard --tp 2` runs): one rank at a time, row chunks,
  FP8 dequantized per slice.
- `nxdi_in_memory`: what NxDI does before NxD's `shard_checkpoint`: load the whole state dict, convert it
  with `convert_hf_to_neuron_state_dict` (here `convert_state_dict`, the same function without an NxDI
  config object), then per rank slice every tensor (`shard_tensor` with the same plan: NxD's own slicing
  gives the same bits, integration/neuron/test_shard_plan.py) and `save_file` it.

The issue's bar: peak RSS of convert + shard on a 2 GB FP8 checkpoint under 1.5 GB.

Usage: python benchmarks/bench_shard.py --out FILE.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import big_expert_fp8_config as bench_config
from _common import record, run_with_rss_guard, write_records

BENCH = "shard"
ROOT = Path(__file__).resolve().parent.parent / ".bench" / "shard"
MIB = 1024**2
TP = 2
IMPLS = ("dsv3_shard", "nxdi_in_memory")
RSS_BAR = 1.5 * 1024**3


# ---- the jobs (run inside a child process) -----------------------------------------------------------


def job_dsv3_shard(src: Path, dst: Path) -> None:
    import torch

    from dsv3_model.nxdi_checkpoint.per_rank_files import write_per_rank_files

    write_per_rank_files(src, dst, tp_degree=TP, dtype=torch.bfloat16)


def job_nxdi_in_memory(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from dsv3_model.nxdi_checkpoint.neuron_tensors import NeuronTarget
    from dsv3_model.nxdi_checkpoint.per_rank_files import WEIGHTS_DIR, rank_file_name
    from dsv3_model.nxdi_checkpoint.shard_plan import NxdiRanks, nxdi_shard_plan
    from dsv3_model.nxdi_checkpoint.state_dict import convert_state_dict
    from dsv3_weights import CheckpointReader
    from dsv3_weights.sharding import shard_tensor

    cfg = CheckpointReader(src).config()
    state: dict[str, torch.Tensor] = {}
    for path in sorted(src.glob("*.safetensors")):  # NxDI's load_state_dict: every file, `model.` stripped
        state.update({key.removeprefix("model."): value for key, value in load_file(path).items()})
    converted = convert_state_dict(state, cfg, NeuronTarget(torch.bfloat16, TP, TP))
    plan = nxdi_shard_plan(cfg)
    (dst / WEIGHTS_DIR).mkdir(parents=True)
    for rank in range(TP):  # NxD shard_checkpoint: a sharded copy per rank, then save_file
        ranks = NxdiRanks(TP)
        sharded = {key: shard_tensor(value, plan[key], ranks.coordinate(key, rank)) for key, value in converted.items()}
        save_file(sharded, str(dst / WEIGHTS_DIR / rank_file_name(rank)))
        del sharded


def run_child(impl: str, src: Path, dst: Path) -> None:
    start = time.perf_counter()
    globals()[f"job_{impl}"](src, dst)
    seconds = time.perf_counter() - start
    from dsv3_weights.progress import peak_rss_bytes

    own, _ = peak_rss_bytes()  # VmHWM (ru_maxrss would include the parent's RSS at fork)
    print(json.dumps({"seconds": seconds, "peak_rss": own}))


# ---- the parent -------------------------------------------------------------------------------------


def measure(impl: str, src: Path, guard_bytes: int) -> dict[str, float]:
    dst = src.parent / f"out-{impl}"
    shutil.rmtree(dst, ignore_errors=True)
    run = run_with_rss_guard([sys.executable, __file__, "--child", impl, str(src), str(dst)], guard_bytes)
    written = sum(p.stat().st_size for p in dst.rglob("*.safetensors")) if dst.exists() else 0
    shutil.rmtree(dst, ignore_errors=True)
    if run.result is None:
        return {"seconds": float("nan"), "peak_rss": float(guard_bytes), "stopped": 1.0, "written": 0.0}
    peak = float(max(run.result["peak_rss"], run.polled_peak_rss))
    return {"seconds": run.result["seconds"], "peak_rss": peak, "stopped": 0.0, "written": float(written)}


def run_case(case: str, cfg: Any, guard_bytes: int) -> list[dict[str, Any]]:
    from dsv3_weights import make_checkpoint

    src = ROOT / case / "src"
    shutil.rmtree(ROOT / case, ignore_errors=True)
    make_checkpoint(src, cfg, fp8=True, seed=0, max_shard_bytes=1 << 30, progress=False)
    in_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    print(f"{case}: made {in_bytes / MIB:.0f} MiB FP8", file=sys.stderr)
    records = [record(BENCH, case, "synthetic", "input_size", in_bytes / MIB, "MiB")]
    results = {}
    for impl in IMPLS:
        results[impl] = r = measure(impl, src, guard_bytes)
        records += [
            record(BENCH, case, impl, "seconds", r["seconds"], "s"),
            record(BENCH, case, impl, "peak_rss", r["peak_rss"] / MIB, "MiB"),
            record(BENCH, case, impl, "output_size", r["written"] / MIB, "MiB"),
            record(BENCH, case, impl, "stopped_at_memory_guard", r["stopped"], "bool"),
        ]
    ours, theirs = results["dsv3_shard"], results["nxdi_in_memory"]
    records += [
        record(BENCH, case, "dsv3_shard", "peak_rss_vs_nxdi_in_memory", ours["peak_rss"] / theirs["peak_rss"], "x"),
        record(BENCH, case, "dsv3_shard", "under_1.5GiB_bar", float(ours["peak_rss"] < RSS_BAR), "bool"),
        record(BENCH, case, "dsv3_shard", "time_vs_nxdi_in_memory", ours["seconds"] / theirs["seconds"], "x"),
    ]
    shutil.rmtree(ROOT / case, ignore_errors=True)
    return records


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "SRC", "DST"))
    args = parser.parse_args()
    if args.child:
        impl, src, dst = args.child
        run_child(impl, Path(src), Path(dst))
        return 0
    import torch

    torch.set_num_threads(2)
    # 2 MoE layers x 16 experts ~ 200 MB; x 160 experts ~ 2 GB
    case, cfg = ("fp8-200MB", bench_config(2, 16)) if args.quick else ("fp8-2GB", bench_config(2, 160))
    guard = int(min(14 * 1024**3, psutil.virtual_memory().available - 3 * 1024**3))
    records = run_case(case, cfg, guard)
    shutil.rmtree(ROOT, ignore_errors=True)
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak RSS of `dsv3 generate` on one FP8 checkpoint: the BF16 path (`--dtype bfloat16`, every weight
dequantized) against `--weights fp8-resident` (FP8 weights and block scales kept, dequantized per matmul),
in bf16 and fp32; issue 19 asks for under 0.6x.

The checkpoint is `big_expert_fp8_config` (experts of 3 x 1024 x 2048 dominate, 1.6 GB of FP8 by default)
so the weights, not the interpreter, decide the peak; the import-only baseline (`dsv3 generate --preset
tiny`, same interpreter and libraries) is measured too and the ratio is also given above it. Each run is
its own process, which reports its own peak (`VmHWM`, exact, not polled); wall seconds beside it.

    python benchmarks/bench_fp8_resident.py --out FILE.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import big_expert_fp8_config, record, write_records

BENCH = "fp8_resident"
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child would report at least
# this parent's peak (which made the checkpoint); VmHWM belongs to the child's own address space.
CHILD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from dsv3_model.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:'))\n"
    "print('peak_rss_bytes', int(hwm.split()[1]) * 1024)\n"
    "sys.exit(code)\n"
)


def peak_rss_of(args: list[str]) -> tuple[float, float]:
    """(peak RSS bytes, wall seconds) of one `dsv3` command in a fresh process (2 threads)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    line = next(line for line in out.stdout.splitlines() if line.startswith("peak_rss_bytes"))
    return float(line.split()[1]), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="a small checkpoint (the ratio is then diluted)")
    args = parser.parse_args()
    from dsv3_weights.synthetic import make_checkpoint

    moe_layers, experts = (1, 16) if args.quick else (2, 128)
    cfg = big_expert_fp8_config(moe_layers, experts)
    generate = ["generate", "--prompt-ids", "1,2,3,4,5,6,7,8", "--max-new-tokens", "8", "--compile-decode", "off"]
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-fp8-resident-") as work:
        model = make_checkpoint(Path(work) / "fp8", cfg, fp8=True, seed=0, progress=False)
        size = sum(f.stat().st_size for f in Path(model).glob("*.safetensors"))
        records.append(record(BENCH, f"{moe_layers}x{experts} experts", "checkpoint", "fp8_bytes", size / 1e9, "GB"))
        runs = {
            "baseline --preset tiny": ["--preset", "tiny"],
            "bf16 dequantized": ["--model", str(model), "--dtype", "bfloat16"],
            "bf16 fp8-resident": ["--model", str(model), "--dtype", "bfloat16", "--weights", "fp8-resident"],
            "fp32 fp8-resident": ["--model", str(model), "--dtype", "float32", "--weights", "fp8-resident"],
        }
        peaks = {}
        for name, extra in runs.items():
            peaks[name], seconds = peak_rss_of([*generate, *extra])
            case = f"{moe_layers}x{experts} experts"
            records += [
                record(BENCH, case, name, "peak_rss", peaks[name] / 1e9, "GB"),
                record(BENCH, case, name, "wall_s", seconds, "s"),
            ]
    base, dense = peaks["baseline --preset tiny"], peaks["bf16 dequantized"]
    for name in ("bf16 fp8-resident", "fp32 fp8-resident"):
        case = f"{moe_layers}x{experts} experts"
        records.append(record(BENCH, case, name, "peak_rss_vs_bf16", peaks[name] / dense, "x"))
        records.append(record(BENCH, case, name, "above_baseline_vs_bf16", (peaks[name] - base) / (dense - base), "x"))
    write_records(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())

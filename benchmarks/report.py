"""Print every benchmark record under a results folder side by side, with ratios to ours.

Usage: python benchmarks/report.py .bench
Records come from the `bench_*.py` scripts, one JSON list per script and transformers version
(`{"bench", "case", "impl", "metric", "value", "unit", "transformers"}`). First, one head-to-head table
of the whole-model runs (bench_model.py and bench_llamacpp.py: every engine, prefill and decode, each as
a ratio to llama.cpp at the same precision, and decode as % of its bandwidth floor) with the issue's goals.
Then, for each (bench, case, metric), every implementation's value, tagged with the transformers version
it ran under, and its ratio to dsv3's ("ours") value under transformers 4.57. Lower is better for time
and bytes; the ratio column says how many times slower/larger the other implementation is.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def load_records(root: Path) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for path in sorted(root.rglob("bench_*.json")):
        records.extend(json.loads(path.read_text()))
    return records


def is_ours(impl: str) -> bool:
    return impl.startswith("ours") or impl.startswith("dsv3")


# Precisions paired for the head-to-head table: dsv3 fp32 vs llama.cpp F32, bf16 vs BF16, FP8-resident vs
# Q8_0 (about one byte per weight both). Read from the case and impl names, so a case another bench adds
# (e.g. `ours fp8-resident`) joins its pair without this file knowing its exact name.
PRECISIONS = {"fp32": ("float32", "f32"), "bf16": ("bfloat16", "bf16"), "8-bit": ("fp8", "q8_0")}
HEAD_TO_HEAD = (
    "prefill_tok_s",
    "decode_tok_s",
    "decode_vs_bandwidth_floor",
    "decode_vs_llamacpp_per_round",
    "decode_vs_llamacpp_same_bytes_per_round",
)
# bench_llamacpp.py's Q8_0 with a BF16 output matrix (the bytes the FP8 checkpoint keeps): a row of its own,
# not the competitor the 8-bit goal and the (x) column compare with
SAME_BYTES_ENGINE = "BF16-output"


def precision_of(case: str, impl: str) -> str | None:
    words = f"{case} {impl}".lower()
    for name in ("8-bit", "bf16", "fp32"):  # fp8-resident may sit in a bfloat16 case: 8-bit wins
        if any(key in words for key in PRECISIONS[name]):
            return name
    return None


def model_dtype(case: str) -> str:
    """The model dtype a case names ("medium bfloat16 p256+d64" -> "bf16"), or "" if none."""
    words = case.lower().split()
    return next((short for short, (long, _) in PRECISIONS.items() if long in words), "")


Row = tuple[str, str, str, str]  # (precision, run shape like "p256+d64", engine, transformers version)


def head_to_head(records: list[dict[str, object]]) -> list[str]:
    """The whole-model table: one row per (precision, run shape, engine, transformers version)."""
    rows: dict[Row, dict[str, float]] = {}
    for r in records:
        if r["bench"] != "model" or r["metric"] not in HEAD_TO_HEAD:
            continue
        case, impl, tf = str(r["case"]), str(r["impl"]), str(r["transformers"])
        precision = precision_of(case, impl)
        if precision is None:
            continue
        if is_ours(impl) or impl.startswith("llama.cpp"):
            tf = "-"  # not transformers: the same code under either venv, shown once (the first)
        if precision == "8-bit" and is_ours(impl):
            impl = f"{impl} {model_dtype(case)}"  # FP8 weights under an fp32 and a bf16 model: two rows
        row = rows.setdefault((precision, case.split()[-1], impl, tf), {})
        row.setdefault(str(r["metric"]), float(r["value"]))  # type: ignore[arg-type]
    llama = {
        (p, shape): row
        for (p, shape, impl, _), row in rows.items()
        if impl.startswith("llama.cpp") and SAME_BYTES_ENGINE not in impl
    }
    lines = [
        "\nhead to head (medium config, 2 threads): tok/s, (x) = ratio to llama.cpp at the same precision "
        "(> 1: faster), decode as % of its bandwidth floor (bytes per step / measured read bandwidth)",
        f"  {'precision':<9} {'run':<9} {'engine':<34} {'tf':<7} {'prefill tok/s':>13} {'(x)':>7} "
        f"{'decode tok/s':>12} {'(x)':>7} {'% floor':>8}",
    ]
    for (precision, shape, impl, tf), row in sorted(rows.items(), key=_row_order):
        competitor = llama.get((precision, shape), {})
        cells = []
        for metric, width in (("prefill_tok_s", 13), ("decode_tok_s", 12)):
            value, base = row.get(metric), competitor.get(metric)
            cells.append(f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}")
            cells.append(f"{value / base:6.2f}x" if value is not None and base else f"{'':>7}")
        floor = row.get("decode_vs_bandwidth_floor")
        cells.append(f"{100 / floor:7.0f}%" if floor else f"{'-':>8}")
        lines.append(f"  {precision:<9} {shape:<9} {impl:<34} {tf:<7} {' '.join(cells)}")
    return lines + goals(rows, llama) if rows else []


def _row_order(item: tuple[Row, dict[str, float]]) -> tuple[int, str, int, str, str]:
    (precision, shape, impl, tf), _ = item
    engine = 0 if impl.startswith("llama.cpp") else 1 if is_ours(impl) else 2
    return list(PRECISIONS).index(precision), shape, engine, impl, tf


def goals(rows: dict[Row, dict[str, float]], llama: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """Issue 19's goals: dsv3 decode at least llama.cpp's at the same precision, fp32 within 1.2x of the floor.
    Where bench_llamacpp.py ran dsv3 right after llama.cpp in each round, the verdict is the median of those
    per-round ratios (two runs minutes apart at most); the fastest dsv3 row of bench_model.py is shown too."""
    lines = []
    for (precision, shape), competitor in sorted(llama.items(), key=lambda kv: list(PRECISIONS).index(kv[0][0])):
        ours = {impl: row for (p, s, impl, _), row in rows.items() if (p, s) == (precision, shape) and is_ours(impl)}
        base = competitor.get("decode_tok_s")
        if not ours or not base:
            continue
        paired = {impl: row for impl, row in ours.items() if "decode_vs_llamacpp_per_round" in row}
        for impl, row in paired.items():
            ratio = row["decode_vs_llamacpp_per_round"]
            verdict = "holds" if ratio >= 1 else "does not hold"
            lines.append(
                f"  goal {precision} {shape}: dsv3 decode ({impl}) / llama.cpp's, median over the rounds: "
                f"{ratio:.2f}x: {verdict}"
            )
            same_bytes = row.get("decode_vs_llamacpp_same_bytes_per_round")
            if same_bytes is not None:
                lines.append(
                    f"  (not a goal) {precision} {shape}: that decode / llama.cpp Q8_0 {SAME_BYTES_ENGINE}'s, which "
                    f"reads the bytes the FP8 checkpoint holds (its lm_head in BF16), median over the rounds: "
                    f"{same_bytes:.2f}x"
                )
        impl, row = max(ours.items(), key=lambda kv: kv[1].get("decode_tok_s", 0.0))
        ratio = row.get("decode_tok_s", 0.0) / base
        verdict = "holds" if ratio >= 1 else "does not hold"
        label = "  (across runs)" if paired else ""
        lines.append(
            f"  goal {precision} {shape}: fastest dsv3 decode ({impl}) {ratio:.2f}x llama.cpp's: {verdict}{label}"
        )
        floor = row.get("decode_vs_bandwidth_floor")
        if precision == "fp32" and floor:
            verdict = "holds" if floor <= 1.2 else "does not hold"
            lines.append(f"  goal fp32 {shape}: that decode at {floor:.2f}x the bandwidth floor (<= 1.2x): {verdict}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    records = load_records(Path(argv[0]))
    if not records:
        print(f"no benchmark records under {argv[0]}", file=sys.stderr)
        return 1
    for line in head_to_head(records):
        print(line)
    groups: dict[tuple[str, str, str], list[dict[str, object]]] = defaultdict(list)
    for record in records:
        groups[(str(record["bench"]), str(record["case"]), str(record["metric"]))].append(record)
    for (bench, case, metric), rows in sorted(groups.items()):
        ours = [r for r in rows if is_ours(str(r["impl"]))]
        baseline = float(ours[0]["value"]) if ours else None  # type: ignore[arg-type]
        print(f"\n{bench} | {case} | {metric}")
        seen: set[tuple[str, str]] = set()
        for row in rows:
            key = (str(row["impl"]), str(row["transformers"]))
            if is_ours(key[0]) and key in seen:
                continue
            seen.add(key)
            value = float(row["value"])  # type: ignore[arg-type]
            ratio = f"{value / baseline:8.2f}x" if baseline else "        "
            print(f"  {key[0]:<28} tf {key[1]:<8} {value:14.6g} {row['unit']!s:<8} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

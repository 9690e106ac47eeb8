"""Print every benchmark record under a results folder side by side, with ratios to ours.

Usage: python benchmarks/report.py .bench
Records come from the `bench_*.py` scripts, one JSON list per script and transformers version
(`{"bench", "case", "impl", "metric", "value", "unit", "transformers"}`). For each (bench, case,
metric) the table shows every implementation's value, tagged with the transformers version it ran
under, and its ratio to dsv3's ("ours") value under transformers 4.57. Lower is better for time
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


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    records = load_records(Path(argv[0]))
    if not records:
        print(f"no benchmark records under {argv[0]}", file=sys.stderr)
        return 1
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

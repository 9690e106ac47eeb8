"""Which of several equivalent computations is faster on this machine: the one measurement every
measured fast path in dsv3 uses (the eager expert kernels, the packed linear layers).

Why measured and not chosen by CPU model: a path tuned on one CPU lost on another (issue 16: the
hand-tuned expert loops beat `grouped_mm` on an AMD EPYC without AMX and lost to it on an AMX CPU), so a
fast path is taken only where it measured faster here. Interleaved runs and medians, because the hosts
are shared and a neighbour's burst moves single runs, not medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch

RUNS = 5


def median_seconds(candidates: Mapping[str, Callable[[], object]], runs: int = RUNS) -> dict[str, float]:
    """Median wall seconds of each candidate over `runs` interleaved calls (after one untimed call each,
    which pays first-call costs such as kernel selection and primitive creation)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()
    for _ in range(runs):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def fastest(candidates: Mapping[str, Callable[[], object]], runs: int = RUNS) -> str:
    """The name of the candidate with the lowest median time (the first listed on a tie)."""
    medians = median_seconds(candidates, runs)
    return min(medians, key=medians.__getitem__)

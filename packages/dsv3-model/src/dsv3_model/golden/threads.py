"""`prefer_passive_omp_wait`: OpenMP threads that sleep at a barrier instead of spinning, for streamed runs.

Why: a streamed run dequantizes thousands of small tensors (an expert of bench_golden's checkpoint is
three 2 MiB FP8 matrices), each a few dozen short parallel regions. libgomp's default wait policy spins
at every barrier; when other processes keep the cores busy (a shared machine, a test suite alongside),
a spinning thread holds the core the thread it waits for needs, and each region then lasts a scheduler
time slice. Measured on the 2-core development machine with other processes running, one expert
(6 MiB FP8 -> 24 MiB fp32): 5.8 s with 2 threads spinning, 34 ms with 1 thread, 13 ms with 2 threads
passive; with the cores idle both policies take 18 ms. That spin was the previous 23 MiB/s.

libgomp reads `OMP_WAIT_POLICY` once, when it is loaded with torch, so this must run before `import
torch`; a value the user set is kept.
"""

from __future__ import annotations

import os


def prefer_passive_omp_wait() -> None:
    """Set `OMP_WAIT_POLICY=PASSIVE` unless the environment already chose a policy."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

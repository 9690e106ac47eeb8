"""Progress bars and the end-of-job summary (bytes in/out, time, peak memory) for long jobs.

The bar goes to stderr and only when stderr is a terminal (or never, with `enabled=False`), so logs
and tests stay clean. Peak RSS is the kernel's high-water mark for this process and, separately, the
largest of its finished worker processes.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tqdm import tqdm


def peak_rss_bytes() -> tuple[int, int]:
    """(this process, largest waited-for child) peak resident set size.

    Linux's `ru_maxrss` of a process started by fork + exec includes the parent's high-water mark at
    the fork, so this process's own figure is `VmHWM` from /proc when available.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return own, children


def gib(nbytes: float) -> str:
    """`nbytes` as the summaries and progress bars print sizes: binary GiB, two decimals."""
    return f"{nbytes / 1024**3:.2f} GiB"


@dataclass
class Summary:
    job: str
    bytes_in: int
    bytes_out: int
    seconds: float
    peak_rss: int
    peak_rss_workers: int

    def format(self) -> str:
        rate = self.bytes_out / self.seconds / 1024**2 if self.seconds else 0.0
        workers = f", workers {gib(self.peak_rss_workers)}" if self.peak_rss_workers else ""
        return (
            f"{self.job}: read {gib(self.bytes_in)}, wrote {gib(self.bytes_out)} in "
            f"{self.seconds:.1f} s ({rate:.0f} MiB/s written); peak RSS {gib(self.peak_rss)}{workers}"
        )


class Progress:
    """A byte-counting progress bar; `summary` is filled when the block exits."""

    def __init__(self, job: str, total_bytes: int, *, enabled: bool = True) -> None:
        self.job = job
        self.bytes_in = 0
        self.bytes_out = 0
        self._start = time.perf_counter()
        self._bar = tqdm(
            total=total_bytes,
            desc=job,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not (enabled and sys.stderr.isatty()),
        )
        self.summary: Summary | None = None

    def read(self, nbytes: int) -> None:
        self.bytes_in += nbytes

    def wrote(self, nbytes: int) -> None:
        self.bytes_out += nbytes
        self._bar.update(nbytes)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.close()
        own, children = peak_rss_bytes()
        self.summary = Summary(
            self.job, self.bytes_in, self.bytes_out, time.perf_counter() - self._start, own, children
        )

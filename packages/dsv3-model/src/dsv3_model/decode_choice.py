"""`generate(compile_decode="auto")`: compile the decode step only where a measurement on this machine
says the rest of the run repays the compile.

Why not always compile: on the 2-core CPUs this project runs on, the compiled medium step was 1.3-1.5x
faster than the eager one, but compiling it took 20-30 s per new batch size and cache length (measured
by benchmarks/bench_model.py, which reports both): a command that decodes a few hundred tokens loses,
a serving loop with fixed shapes wins. Why not a fixed token threshold: both sides of the trade differ
between CPUs (issue 16: the eager paths tuned on one CPU lost on another), so each is measured here.

How: every compiled run (`compile_decode=True`, or "auto" once it has switched) records, per machine
(CPU model and the instruction-set flags that pick kernels, threads, torch version), model (config,
dtype, module kinds), batch size and cache length, its compile seconds and its median step seconds in a
small JSON file (`$DSV3_CACHE_DIR` or `~/.cache/dsv3`, `decode_choice.json`, written under a temporary
name and renamed). An "auto" run decodes eagerly, times its first `PROBE_STEPS` steps, and switches to
the compiled step when `(eager step - compiled step) * steps left > compile seconds` by that record,
the compile counting zero when this process already compiled these shapes. With no record it stays
eager: a speed-up nobody measured here is not assumed. Decided by times and shapes, never by tensor values.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dsv3_config import ModelConfig

PROBE_STEPS = 4  # eager steps timed before deciding (the first runs at once, the rest give the median)
CACHE_FILE = "decode_choice.json"
_FLAG_PREFIXES = ("avx512_bf16", "avx512f", "amx", "avx_vnni", "avx512_vnni", "avx2", "neon", "sve")


@dataclass(frozen=True)
class CompiledRecord:
    """What one compiled run measured: seconds to compile, median seconds per compiled step."""

    compile_s: float
    step_s: float


def cache_path() -> Path:
    root = os.environ.get("DSV3_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsv3"
    return Path(root) / CACHE_FILE


def machine_key() -> str:
    """CPU model, its kernel-deciding flags, threads and torch version (what the timings depend on)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = info.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith(("flags", "Features"))), [])
    wanted = sorted(f for f in flags if f.startswith(_FLAG_PREFIXES))
    return f"{model}|{' '.join(wanted)}|threads {torch.get_num_threads()}|torch {torch.__version__}"


def shape_key(model: nn.Module, cfg: ModelConfig, batch: int, cache_len: int) -> str:
    """The model (config, dtype, kinds of modules: FP8 resident or not) and the decode shapes."""
    dtype = model.get_submodule("model.norm").weight.dtype  # every variant holds it (streamed ones too)
    kinds = sorted({type(m).__name__ for m in model.modules()})
    digest = hashlib.sha256(f"{cfg.model_dump_json()}|{dtype}|{kinds}".encode()).hexdigest()[:16]
    return f"{machine_key()}|model {digest}|batch {batch}|cache {cache_len}"


def read_record(key: str) -> CompiledRecord | None:
    entry = _read_all().get(key)
    if not isinstance(entry, dict):
        return None
    try:
        return CompiledRecord(compile_s=float(entry["compile_s"]), step_s=float(entry["step_s"]))
    except (KeyError, TypeError, ValueError):
        return None  # an entry some other version wrote: measured again, not trusted


def write_record(key: str, record: CompiledRecord) -> None:
    """Add or replace one record (temporary file, then rename: a reader never sees half a file)."""
    path = cache_path()
    entries = _read_all()
    entries[key] = {"compile_s": record.compile_s, "step_s": record.step_s}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        return  # a read-only home: the next run measures again, generation itself is unaffected


def _read_all() -> dict[str, object]:
    try:
        entries = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def should_switch(
    eager_step_seconds: list[float], steps_left: int, record: CompiledRecord | None, compiled: bool
) -> bool:
    """After the probe steps: does compiling (or reusing this process's compiled step) repay itself?"""
    if record is None or len(eager_step_seconds) < PROBE_STEPS:
        return False
    eager_s = statistics.median(eager_step_seconds[1:])
    compile_s = 0.0 if compiled else record.compile_s
    return (eager_s - record.step_s) * steps_left > compile_s


def compiled_record(step_seconds: list[float]) -> CompiledRecord | None:
    """From a compiled run's step times (the first one compiled): the record, or None if too short."""
    if len(step_seconds) < 3:
        return None
    step_s = statistics.median(step_seconds[1:])
    return CompiledRecord(compile_s=max(step_seconds[0] - step_s, 0.0), step_s=step_s)

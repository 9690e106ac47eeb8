"""The output directory of a conversion: one writer at a time, another job's files refused, and a write
error (disk full) that leaves nothing looking complete and resumes with room.

Real processes throughout: a second writer is a real `convert_checkpoint` against a real conversion
paused mid-run (SIGSTOP), a stale lock is one left by a SIGKILLed process, and the write error is the
kernel's own EFBIG from `RLIMIT_FSIZE` (CPython ignores SIGXFSZ, so the write fails instead of killing
the process), which works unprivileged on any Linux. The reference output is an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv3_weights import MANIFEST_NAME, convert_checkpoint
from dsv3_weights.destination import LOCK_NAME, locked
from dsv3_weights.writer import TMP_SUFFIX

SHARD = 64 * 1024
CHILD = (
    "import sys; from dsv3_weights import convert_checkpoint; "
    f"convert_checkpoint(sys.argv[1], sys.argv[2], max_shard_bytes={SHARD}, progress=False)"
)

HOLDER = (
    "import sys, time; from pathlib import Path; from dsv3_weights.destination import locked\n"
    "with locked(Path(sys.argv[1]), 'test'):\n    print('held', flush=True); time.sleep(600)"
)


def _child(src: Path, dst: Path, file_limit: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, str(src), str(dst)]
    return subprocess.Popen(cmd, env=env, preexec_fn=limit, stderr=subprocess.PIPE, text=True)


def _recorded(dst: Path) -> dict[str, dict[str, object]]:
    try:
        return dict(json.loads((dst / MANIFEST_NAME).read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != LOCK_NAME}


def _same_as(reference: Path, dst: Path) -> None:
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        assert path.read_bytes() == (dst / path.name).read_bytes(), path.name


@pytest.fixture
def reference(tiny_fp8_dir: Path, tmp_path: Path) -> Path:
    """An uninterrupted conversion."""
    convert_checkpoint(tiny_fp8_dir, tmp_path / "reference", max_shard_bytes=SHARD, progress=False)
    return tmp_path / "reference"


def test_a_second_writer_refuses_at_once_and_loses_nothing(tiny_fp8_dir: Path, reference: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    first = _child(tiny_fp8_dir, dst)
    deadline = time.monotonic() + 120
    while not _recorded(dst) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)  # mid-conversion, holding the lock
    try:
        assert first.poll() is None, "the first conversion finished before it could be paused"
        before = _snapshot(dst)
        start = time.monotonic()
        with pytest.raises(BlockingIOError, match=rf"{dst}: another process \(pid {first.pid}\) is writing here"):
            convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)
        assert time.monotonic() - start < 5  # refused at once, not after waiting
        assert _snapshot(dst) == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 0
    _same_as(reference, dst)


def test_a_lock_left_by_a_killed_process_does_not_block(tiny_fp8_dir: Path, reference: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(dst)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(BlockingIOError, match="is locked"), locked(dst, "test"):
        pass
    holder.kill()
    holder.wait()
    assert (dst / LOCK_NAME).exists()  # stale: its holder died without removing it
    convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)
    _same_as(reference, dst)


def test_another_jobs_directory_is_refused(tiny_fp8_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)
    before = _snapshot(dst)
    with pytest.raises(FileExistsError, match=f"{dst / MANIFEST_NAME}: records a conversion of another source"):
        convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=2 * SHARD, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("someone else's")
    with pytest.raises(FileExistsError, match=r"not empty and not a conversion in progress \(holds \['notes.txt'\]"):
        convert_checkpoint(tiny_fp8_dir, tmp_path / "other", max_shard_bytes=SHARD, progress=False)
    assert _snapshot(dst) == before


def test_a_write_error_mid_run_is_clear_leaves_nothing_complete_and_resumes(
    tiny_fp8_dir: Path, reference: Path, tmp_path: Path
) -> None:
    sizes = {p.name: p.stat().st_size for p in sorted(reference.glob("model-*.safetensors"))}
    largest = max(sizes.values())
    first_too_big = next(i for i, size in enumerate(sizes.values()) if size == largest)
    assert first_too_big > 0, "the first shard is the largest: nothing would be written before the error"
    dst = tmp_path / "dst"
    child = _child(tiny_fp8_dir, dst, file_limit=largest - 1)
    _, err = child.communicate(timeout=300)
    assert child.returncode != 0
    too_big = list(sizes)[first_too_big]
    assert f"File too large; removed the partial file: '{dst / too_big}{TMP_SUFFIX}'" in err
    assert not list(dst.glob("*" + TMP_SUFFIX))
    assert not (dst / "config.json").exists()
    assert sorted(_recorded(dst)) == list(sizes)[:first_too_big]
    convert_checkpoint(tiny_fp8_dir, dst, max_shard_bytes=SHARD, progress=False)  # room again: resumes
    _same_as(reference, dst)

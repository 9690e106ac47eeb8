"""`dsv3 shard` into a directory it does not own: another job's files are refused, never mixed; a
second writer refuses at once while the first (a real shard run, paused mid-run by SIGSTOP) loses nothing;
a write error (the kernel's EFBIG under `RLIMIT_FSIZE`, as a full disk would give ENOSPC) is one line
naming the file, leaves no partial file, and a rerun with room completes.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv3_config import preset
from dsv3_model.cli.main import main
from dsv3_model.nxdi_checkpoint.per_rank_files import MANIFEST_NAME, WEIGHTS_DIR, write_per_rank_files
from dsv3_weights import make_checkpoint

# A shard run slowed down (1 KiB row blocks) so that it can be paused mid-run.
SLOW_CHILD = (
    "import sys; from dsv3_model.nxdi_checkpoint import per_rank_files as p; p.CHUNK_BYTES = 1024; "
    "p.write_per_rank_files(sys.argv[1], sys.argv[2], tp_degree=2)"
)


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("fp8"), preset("tiny"), fp8=True, seed=3, progress=False)


def _files(weights: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(weights.iterdir())}


def test_another_tp_into_the_same_directory_is_refused(
    fp8_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSV3_DEBUG", raising=False)
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "4"]) == 0
    before = _files(tmp_path / WEIGHTS_DIR)
    capsys.readouterr()
    for other in (["--tp", "2"], ["--tp", "4", "--ep", "2"], ["--tp", "4", "--dtype", "fp32"]):
        assert main(["shard", str(fp8_checkpoint), str(tmp_path), *other]) == 1
        err = capsys.readouterr().err
        assert err.strip() == (
            f"dsv3 shard: error: {tmp_path / WEIGHTS_DIR / MANIFEST_NAME}: records a shard of another source or "
            "with other options; use a new or empty directory"
        ), other
        assert _files(tmp_path / WEIGHTS_DIR) == before
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "4"]) == 0  # the same job: nothing to redo
    assert _files(tmp_path / WEIGHTS_DIR) == before


def test_a_second_writer_refuses_at_once_and_loses_nothing(fp8_checkpoint: Path, tmp_path: Path) -> None:
    write_per_rank_files(fp8_checkpoint, tmp_path / "reference", tp_degree=2)
    dst = tmp_path / "dst"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, str(fp8_checkpoint), str(dst)], env=env)
    deadline = time.monotonic() + 120
    while not (dst / WEIGHTS_DIR / MANIFEST_NAME).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)
    try:
        assert first.poll() is None, "the first run finished before it could be paused"
        start = time.monotonic()
        with pytest.raises(BlockingIOError, match=rf"another process \(pid {first.pid}\) is writing here"):
            write_per_rank_files(fp8_checkpoint, dst, tp_degree=2)
        assert time.monotonic() - start < 5
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    assert _files(dst / WEIGHTS_DIR) == _files(tmp_path / "reference" / WEIGHTS_DIR)


def test_a_write_error_is_one_line_leaves_nothing_partial_and_resumes(fp8_checkpoint: Path, tmp_path: Path) -> None:
    write_per_rank_files(fp8_checkpoint, tmp_path / "reference", tp_degree=2)
    rank0 = tmp_path / "reference" / WEIGHTS_DIR / "tp0_sharded_checkpoint.safetensors"
    limit = rank0.stat().st_size // 2

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {key: value for key, value in os.environ.items() if key != "DSV3_DEBUG"}
    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "dsv3_model.cli.main", "shard", str(fp8_checkpoint), str(dst), "--tp", "2"]
    run = subprocess.run(cmd, env=env, preexec_fn=small_files, capture_output=True, text=True, check=False)
    assert run.returncode == 1
    tmp = dst / WEIGHTS_DIR / "tp0_sharded_checkpoint.safetensors.tmp"
    assert run.stderr.strip() == f"dsv3 shard: error: [Errno 27] File too large; removed the partial file: '{tmp}'"
    assert sorted(p.name for p in (dst / WEIGHTS_DIR).iterdir()) == [MANIFEST_NAME]
    assert main(["shard", str(fp8_checkpoint), str(dst), "--tp", "2"]) == 0
    assert _files(dst / WEIGHTS_DIR) == _files(tmp_path / "reference" / WEIGHTS_DIR)

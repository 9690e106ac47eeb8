"""SIGKILL a converting child process 20 times at random moments, rerun, and compare with an uninterrupted run.

The source is a 235 MB FP8 checkpoint (the tiny preset widened: hidden 512, 64 experts of 768), converted
into 60 shards of 8 MB (470 MB of BF16). Kill points are drawn two ways: a random delay from the child's
start (it may die while importing, planning, or writing; cut short once all but one shard is recorded, so
that it never finishes), and, for 19 targets spread over the run, once a random number of shards is
recorded: at once (mid-manifest, mid-rename) or when the next shard's `.tmp` reaches a random fraction of
its final size (mid-shard). Kill moments follow the run's own progress, so they land whatever the speed
of the machine (a fixed window outlived the run once conversion got fast; windows scaled by a measured
shard time missed it on a loaded machine).
After every kill nothing may claim completeness and every shard under its final name must be intact;
the final rerun must equal the reference bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv3_config import preset
from dsv3_weights import MANIFEST_NAME, convert_checkpoint, make_checkpoint
from dsv3_weights.reader import INDEX_NAME
from dsv3_weights.safetensors_io import read_header
from dsv3_weights.writer import TMP_SUFFIX, crc32_file

SHARD = 8 * 1024 * 1024
KILLS = 20
WIDE = {"hidden_size": 512, "moe_intermediate_size": 768, "intermediate_size": 1024, "n_routed_experts": 64}
CHILD = (
    "import sys; from dsv3_weights import convert_checkpoint; "
    f"convert_checkpoint(sys.argv[1], sys.argv[2], max_shard_bytes={SHARD}, progress=False)"
)


def _start(src: Path, dst: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dst)], env=env)


def _recorded(dst: Path) -> int:
    try:
        return len(json.loads((dst / MANIFEST_NAME).read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _kill_when(
    child: subprocess.Popen[bytes], dst: Path, shards: int, tmp: Path, nbytes: float, timeout_s: float
) -> int:
    """SIGKILL once `shards` are recorded and then `tmp` holds `nbytes` (0: at once), or `timeout_s` passed;
    1 if the child was still converting."""
    deadline = time.monotonic() + timeout_s
    while _recorded(dst) < shards and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    final = tmp.with_suffix("")
    while nbytes and child.poll() is None and not final.exists() and time.monotonic() < deadline:
        if tmp.exists() and tmp.stat().st_size >= nbytes:
            break
        time.sleep(0.001)
    working = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.wait()
    return int(working and not (dst / "config.json").exists())


def _check_nothing_corrupt(dst: Path) -> None:
    assert not (dst / "config.json").exists() or (dst / INDEX_NAME).exists()
    manifest = json.loads((dst / MANIFEST_NAME).read_text())["shards"] if (dst / MANIFEST_NAME).exists() else {}
    for path in dst.glob("model-*.safetensors"):
        read_header(path)  # a complete, parseable file
        if path.name in manifest:
            assert crc32_file(path) == manifest[path.name]["crc32"], path.name


@pytest.mark.slow  # 21 child processes, each importing torch; about 1.5 min on the 2-core dev machine
def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = preset("tiny").replace(**WIDE)
    src = make_checkpoint(tmp_path / "src", cfg, fp8=True, seed=3, max_shard_bytes=64 << 20, progress=False)
    assert sum(p.stat().st_size for p in src.glob("*.safetensors")) > 200e6
    reference = tmp_path / "reference"
    convert_checkpoint(src, reference, max_shard_bytes=SHARD, progress=False)
    names = sorted(p.name for p in reference.glob("model-*.safetensors"))
    total = len(names)
    assert total >= 40
    seed = int(os.environ.get("DSV3_KILL_SEED", "0")) or random.SystemRandom().randrange(1 << 30)
    print(f"kill points drawn with DSV3_KILL_SEED={seed}")
    rng = random.Random(seed)
    dst = tmp_path / "dst"
    child = _start(src, dst)
    # anywhere from import to mid-conversion: a random delay, or all but one shard recorded if sooner
    landed = _kill_when(child, dst, total - 1, dst / "none", 0, timeout_s=rng.uniform(0.5, 4.0))
    _check_nothing_corrupt(dst)
    for target in sorted(rng.sample(range(1, total - 1), KILLS - 1)):
        child = _start(src, dst)
        # once `target` shards are recorded: at once (mid-manifest, mid-rename), or part-way into the next
        nbytes = rng.choice([0.0, rng.random() * (reference / names[target]).stat().st_size])
        landed += _kill_when(child, dst, target, dst / (names[target] + TMP_SUFFIX), nbytes, timeout_s=120)
        _check_nothing_corrupt(dst)
        assert _recorded(dst) >= target
    print(f"{landed} of {KILLS} kills landed before the conversion finished")
    assert landed >= KILLS - 1, "kills came after the end of the conversion"
    convert_checkpoint(src, dst, max_shard_bytes=SHARD, progress=False)
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        assert path.read_bytes() == (dst / path.name).read_bytes(), path.name

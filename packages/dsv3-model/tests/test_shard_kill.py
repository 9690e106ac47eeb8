"""`dsv3 shard --tp 2` SIGKILLed 20 times at random moments, rerun, and compared with an uninterrupted run.

The source is a 235 MB FP8 checkpoint (the tiny preset widened: hidden 512, 64 experts of 768); each of
the two rank files holds 235 MB of BF16. A run resumes per rank file, so kill moments follow the run's
own progress, whatever the machine's speed: a quarter at a random delay from the child's start
(importing, validating, planning), the rest once the rank file being written (`.tmp`) reaches a random
fraction of its final size (the first rank not yet recorded), or, for one in two of those, once it is
renamed (the child dies between rename and manifest, or just after). After every kill no rank file
under its final name may be damaged (each parses, and each the manifest records has its checksum); the
final rerun must equal the reference byte for byte, manifest included.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv3_config import preset
from dsv3_model.nxdi_checkpoint.per_rank_files import MANIFEST_NAME, WEIGHTS_DIR, rank_file_name, write_per_rank_files
from dsv3_weights import make_checkpoint
from dsv3_weights.safetensors_io import read_header
from dsv3_weights.writer import crc32_file

TP = 2
KILLS = 20
WIDE = {"hidden_size": 512, "moe_intermediate_size": 768, "intermediate_size": 1024, "n_routed_experts": 64}


def _shard(src: Path, dst: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dsv3_model.cli.main", "shard", str(src), str(dst), "--tp", str(TP)]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)


def _records(weights: Path) -> dict[str, dict[str, object]]:
    try:
        return dict(json.loads((weights / MANIFEST_NAME).read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _check_nothing_damaged(weights: Path) -> None:
    records = _records(weights)
    for path in weights.glob("tp*_sharded_checkpoint.safetensors"):
        read_header(path)  # complete and parseable
        if path.name in records:
            assert crc32_file(path) == records[path.name]["crc32"], path.name


def _wait_for(child: subprocess.Popen[bytes], weights: Path, rank: int, nbytes: float) -> None:
    """Until rank `rank`'s `.tmp` holds `nbytes`, or its final file exists (renamed), or the child exited."""
    final = weights / rank_file_name(rank)
    tmp = final.with_name(final.name + ".tmp")
    deadline = time.monotonic() + 300
    while child.poll() is None and not final.exists() and time.monotonic() < deadline:
        try:
            if tmp.stat().st_size >= nbytes:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.001)


@pytest.mark.slow  # 21 child processes, each importing torch; about 1.5 min on the 2-core dev machine
def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "src", preset("tiny").replace(**WIDE), fp8=True, seed=3, progress=False)
    assert sum(p.stat().st_size for p in src.glob("*.safetensors")) > 200e6
    write_per_rank_files(src, tmp_path / "reference", tp_degree=TP)
    sizes = [(tmp_path / "reference" / WEIGHTS_DIR / rank_file_name(r)).stat().st_size for r in range(TP)]
    seed = int(os.environ.get("DSV3_KILL_SEED", "0")) or random.SystemRandom().randrange(1 << 30)
    print(f"kill points drawn with DSV3_KILL_SEED={seed}")
    rng = random.Random(seed)
    dst = tmp_path / "dst"
    weights = dst / WEIGHTS_DIR
    landed = 0
    for kill in range(KILLS):
        child = _shard(src, dst)
        if kill % 4 == 0:
            time.sleep(rng.uniform(0.0, 4.0))
        else:
            rank = len(_records(weights))  # ranks are written in order
            _wait_for(child, weights, rank, rng.choice([math.inf, rng.random() * sizes[rank]]))
        working = child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait()
        landed += int(working and len(_records(weights)) < TP)
        _check_nothing_damaged(weights)
        if len(_records(weights)) == TP:  # it finished: start over so later kills interrupt a run again
            for path in weights.iterdir():
                path.unlink()
    print(f"{landed} of {KILLS} kills landed before the shard run finished")
    assert landed >= KILLS // 2, "most kills came after the end of the run"
    assert _shard(src, dst).wait() == 0
    reference = tmp_path / "reference" / WEIGHTS_DIR
    assert sorted(p.name for p in weights.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():  # the manifest too: same job, same checksums
        assert path.read_bytes() == (weights / path.name).read_bytes(), path.name

"""Shared fixtures: synthetic checkpoints of the tiny preset, written once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dsv3_config import preset
from dsv3_weights import make_checkpoint

SMALL_SHARDS = 64 * 1024  # bytes: the tiny preset then spans several shards


@pytest.fixture(scope="session")
def tiny_fp8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("tiny-fp8") / "ckpt"
    return make_checkpoint(dst, preset("tiny"), fp8=True, seed=0, max_shard_bytes=SMALL_SHARDS, progress=False)


@pytest.fixture
def tiny_fp8_copy(tiny_fp8_dir: Path, tmp_path: Path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(tiny_fp8_dir, tmp_path / "copy"))

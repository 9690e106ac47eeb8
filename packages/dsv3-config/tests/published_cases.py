"""Where the published `config.json` files are: package data, and `shared/configs` beside the repo."""

from __future__ import annotations

from pathlib import Path

from dsv3_config.presets import PUBLISHED_FILES, published_config

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_CONFIGS = REPO_ROOT.parent / "shared" / "configs"
PUBLISHED_NAMES = sorted(set(PUBLISHED_FILES.values()))

__all__ = ["PUBLISHED_FILES", "PUBLISHED_NAMES", "SHARED_CONFIGS", "published_config"]

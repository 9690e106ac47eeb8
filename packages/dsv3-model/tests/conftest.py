"""Every test reads and writes decode-choice records (`dsv3_model.decode_choice`) in its own temporary
folder, never the user's cache: `generate(compile_decode="auto")` must not depend on what ran before."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_decode_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSV3_CACHE_DIR", str(tmp_path_factory.mktemp("dsv3-cache")))

"""The latent cache in NxDI's block layout at tp=2 (torchrun, gloo, fp32), driven as vLLM's Neuron runner
drives it (`paged_requests.py`), against transformers 4.57 fp32 and against the same model uncached.

- Prefix caching: request B shares a 48-token prefix (three 16-token blocks) with request A; prefilled
  over A's blocks, its context-encoding call processes its 16 new tokens only, and its logits equal B
  prefilled from nothing within 1e-5 (the same fp32 math, attention over the 48 cached latents in one
  call instead of recomputed ones: measured 1.2e-7 at tp=1). Decoding 24 greedy tokens from B's blocks
  gives transformers' tokens.
- Chunked prefill: a 200-token prompt prefilled in chunks of 64 equals the one-call prefill within 1e-5
  and transformers within 1e-4 (the suite's tolerance, test_causal_lm_cpu.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import harness
import paged_worker
import pytest
import torch

CACHED_TOL, HF_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = harness.model_config("tiny")
    directory = tmp_path_factory.mktemp("tiny-paged")
    hf = harness.save_hf_checkpoint(cfg, directory)
    return {"dir": directory, "hf": hf, "ids": paged_worker.prompts(cfg.vocab_size), "cfg": cfg}


def _run(mode: str, checkpoint: dict[str, Any], out_dir: Path, port: int) -> dict[str, Any]:
    out_file = out_dir / f"{mode}.pt"
    harness.torchrun("paged_worker.py", port, mode, str(checkpoint["dir"]), str(out_file))
    return torch.load(out_file)


@pytest.fixture(scope="module")
def prefix_run(checkpoint: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run("prefix", checkpoint, tmp_path_factory.mktemp("prefix"), 29641)


@pytest.fixture(scope="module")
def chunked_run(checkpoint: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run("chunked", checkpoint, tmp_path_factory.mktemp("chunked"), 29643)


def _hf_last_logits(checkpoint: dict[str, Any], name: str) -> torch.Tensor:
    with torch.no_grad():
        return checkpoint["hf"](checkpoint["ids"][name]).logits[:, -1]


def test_block_cache_holds_the_latent_once(prefix_run: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    assert prefix_run["values_per_token_per_layer"] == checkpoint["cfg"].latent_cache_width == 40


def test_shared_prefix_is_not_recomputed(prefix_run: dict[str, Any]) -> None:
    """A's prefill processes its 64 tokens, B's over A's three cached blocks only its 16 new ones; B
    prefilled from nothing processes 64 again."""
    assert prefix_run["counts"] == [paged_worker.PREFIX_LEN + paged_worker.SUFFIX_LEN, paged_worker.SUFFIX_LEN]
    assert prefix_run["all_counts"][-1] == paged_worker.PREFIX_LEN + paged_worker.SUFFIX_LEN


def test_prefix_cached_logits_equal_the_uncached_run(prefix_run: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    torch.testing.assert_close(prefix_run["cached"], prefix_run["uncached"], atol=CACHED_TOL, rtol=0)
    torch.testing.assert_close(prefix_run["uncached"], _hf_last_logits(checkpoint, "b"), atol=HF_TOL, rtol=0)
    torch.testing.assert_close(prefix_run["a"], _hf_last_logits(checkpoint, "a"), atol=HF_TOL, rtol=0)


def test_block_kv_decode_matches_transformers(prefix_run: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """24 tokens from position 64: the decode writes blocks 4, 5 and 6 and reads the shared ones."""
    ids_1L = checkpoint["ids"]["b"]
    expected = checkpoint["hf"].generate(
        ids_1L,
        attention_mask=torch.ones_like(ids_1L),
        max_new_tokens=paged_worker.DECODE_STEPS,
        min_new_tokens=paged_worker.DECODE_STEPS,
        do_sample=False,
    )
    assert prefix_run["tokens"] == expected[0, ids_1L.shape[1] :].tolist()


def test_chunked_prefill_equals_one_call(chunked_run: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """Chunks of 64: calls over 0, 64, 128 cached tokens, then the last 8 tokens in the 16-token bucket
    (8 cached tokens recomputed to fill it, as NxDI's bucket choice does)."""
    assert chunked_run["chunked_prefill"] is True
    assert chunked_run["counts"] == [64, 64, 64, 16]
    torch.testing.assert_close(chunked_run["chunked"], chunked_run["one_shot"], atol=CACHED_TOL, rtol=0)
    torch.testing.assert_close(chunked_run["chunked"], _hf_last_logits(checkpoint, "c"), atol=HF_TOL, rtol=0)

"""One rank of a tp=N run of the block KV cache, started by `test_block_kv_cpu.py` under torchrun (gloo, fp32).

Usage: torchrun --nproc-per-node N paged_worker.py MODE CHECKPOINT_DIR OUT_FILE
MODE `prefix`: the model vLLM's plugin builds with prefix caching on (`is_block_kv_layout`,
`is_prefix_caching`); request A (48-token prefix + 16 tokens) prefilled into blocks 0-3, request B
(the same prefix + 16 others) prefilled over A's first three blocks, B again uncached in fresh blocks,
then greedy decoding after the cached B. MODE `chunked`: the model built with NxDI's
`chunked_prefill_config`; a 200-token prompt prefilled in chunks of 64, and the same prompt in one call
into other blocks. Rank 0 saves logits, the context-encoding token counts and the generated tokens with
`torch.save`; the prompts come from `PROMPTS` so the test rebuilds them for transformers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import neuron_stand_ins

BLOCK_SIZE = 16
SEQ_LEN = 256
PREFIX_LEN, SUFFIX_LEN, CHUNKED_LEN, CHUNK = 48, 16, 200, 64
DECODE_STEPS = 24
# Context buckets hold one suffix (16), one chunk (64) and a whole prompt (256); prefix buckets the
# cached lengths the calls below present (48 for B; 64, 128, 192 for the chunks), in whole blocks.
NEURON_OPTIONS: dict[str, Any] = {
    "is_block_kv_layout": True,
    "pa_block_size": BLOCK_SIZE,
    "pa_num_blocks": 48,
    "enable_bucketing": True,
    "context_encoding_buckets": [SUFFIX_LEN, CHUNK, SEQ_LEN],
    "prefix_buckets": [PREFIX_LEN, CHUNK, 2 * CHUNK, 3 * CHUNK],
    "token_generation_buckets": [SEQ_LEN],
}
MODES = {"prefix": {"is_prefix_caching": True}, "chunked": {"chunked_prefill_config": {"max_num_seqs": 1}}}


def prompts(vocab_size: int) -> dict[str, torch.Tensor]:
    """A and B share their first PREFIX_LEN tokens; C is the long prompt (ids avoid 0 and 1)."""
    generator = torch.Generator().manual_seed(7)
    prefix_1P = torch.randint(2, vocab_size, (1, PREFIX_LEN), generator=generator)
    a_1L = torch.cat([prefix_1P, torch.randint(2, vocab_size, (1, SUFFIX_LEN), generator=generator)], dim=1)
    b_1L = torch.cat([prefix_1P, torch.randint(2, vocab_size, (1, SUFFIX_LEN), generator=generator)], dim=1)
    c_1L = torch.randint(2, vocab_size, (1, CHUNKED_LEN), generator=generator)
    return {"a": a_1L, "b": b_1L, "c": c_1L}


def run_prefix(model: Any, ids: dict[str, torch.Tensor]) -> dict[str, Any]:
    import paged_requests

    layout = paged_requests.PagedLayout(BLOCK_SIZE, SEQ_LEN)
    counts = paged_requests.context_tokens_counter(model)
    a_blocks, b_blocks, fresh_blocks = [0, 1, 2, 3], [0, 1, 2, 4, 5, 6], [10, 11, 12, 13]
    a_1V = paged_requests.prefill(model, layout, ids["a"], a_blocks, 0)
    cached_1V = paged_requests.prefill(model, layout, ids["b"], b_blocks, PREFIX_LEN)
    cached_counts = list(counts)
    tokens = paged_requests.greedy(model, layout, ids["b"], b_blocks, cached_1V, DECODE_STEPS)
    uncached_1V = paged_requests.prefill(model, layout, ids["b"], fresh_blocks, 0)
    return {
        "a": a_1V,
        "cached": cached_1V,
        "uncached": uncached_1V,
        "counts": cached_counts,
        "all_counts": counts,
        "tokens": tokens,
    }


def run_chunked(model: Any, ids: dict[str, torch.Tensor]) -> dict[str, Any]:
    import paged_requests

    layout = paged_requests.PagedLayout(BLOCK_SIZE, SEQ_LEN)
    counts = paged_requests.context_tokens_counter(model)
    blocks = list(range(13))  # 200 tokens
    chunked_1V = paged_requests.chunked_prefill(model, layout, ids["c"], blocks, CHUNK)
    chunk_counts = list(counts)
    one_shot_1V = paged_requests.prefill(model, layout, ids["c"], list(range(20, 33)), 0)
    return {
        "chunked": chunked_1V,
        "one_shot": one_shot_1V,
        "counts": chunk_counts,
        "all_counts": counts,
        "chunked_prefill": bool(model.neuron_config.dsv3_chunked_prefill),
    }


def main(argv: list[str]) -> None:
    mode, checkpoint, out_file = argv
    neuron_stand_ins.install()
    import harness

    cfg = harness.model_config("tiny")
    world = int(os.environ["WORLD_SIZE"])
    model = harness.build_neuron_model(
        Path(checkpoint), tp_degree=world, seq_len=SEQ_LEN, **NEURON_OPTIONS, **MODES[mode]
    )
    ids = prompts(cfg.vocab_size)
    result = run_prefix(model, ids) if mode == "prefix" else run_chunked(model, ids)
    result["values_per_token_per_layer"] = model.context_encoding_model.model.kv_mgr.values_per_token_per_layer()
    if int(os.environ["RANK"]) == 0:
        torch.save(result, out_file)
    # Leave together: a rank exiting with live gloo threads aborts ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

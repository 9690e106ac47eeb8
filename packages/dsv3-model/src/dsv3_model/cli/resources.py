"""Whether a model's weights can fit this machine's memory at all, known from its config alone.

`dsv3 generate` materializes every weight in CPU memory (random ones for `--preset`, read ones for
`--model`); a model larger than the machine's physical memory cannot run here, and trying would end in
an allocation failure or the out-of-memory killer minutes later. The bound is the physical memory, not
what is free now, so only what can never fit is refused. The MTP layer is not counted (a lower bound).
"""

from __future__ import annotations

import os

from dsv3_config import ModelConfig, count_params
from dsv3_model.cli.errors import UsageError

BYTES_PER_VALUE = {"float32": 4, "bfloat16": 2}


def physical_memory_bytes() -> int | None:
    """Total RAM, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def weight_bytes_lower_bound(cfg: ModelConfig, dtype: str, weights: str = "dequantized") -> int:
    """Bytes the weights take at least: every parameter in `dtype`; with `--weights fp8-resident`, one
    byte per parameter except the embedding, in `dtype`, and an untied `lm_head`, which FP8 checkpoints
    store unquantized (BF16) and which stays as stored (`dsv3_model.stored_dtype`), so at most 2 bytes
    (the FP8 scales and the other unquantized tensors only add to this, so it stays a lower bound)."""
    total, width = count_params(cfg).total, BYTES_PER_VALUE[dtype]
    if weights != "fp8-resident":
        return total * width
    matrix = cfg.vocab_size * cfg.hidden_size
    lm_head = 0 if cfg.tie_word_embeddings else matrix * (min(width, BYTES_PER_VALUE["bfloat16"]) - 1)
    return total + matrix * (width - 1) + lm_head


def check_weights_fit(cfg: ModelConfig, dtype: str, source: str, weights: str = "dequantized") -> None:
    """UsageError naming `source` (the option) when the weights alone exceed the physical memory."""
    need = weight_bytes_lower_bound(cfg, dtype, weights)
    have = physical_memory_bytes()
    if have is not None and need > have:
        held = f"{dtype} weights" if weights != "fp8-resident" else "FP8-resident weights"
        raise UsageError(
            f"{source}: its {held} need {need / 2**30:,.0f} GiB, more than this machine's "
            f"{have / 2**30:,.0f} GiB of memory; use a smaller model (e.g. --preset tiny or medium)"
        )

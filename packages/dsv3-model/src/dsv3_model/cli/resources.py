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


def check_weights_fit(cfg: ModelConfig, dtype: str, source: str) -> None:
    """UsageError naming `source` (the option) when the weights alone exceed the physical memory."""
    need = count_params(cfg).total * BYTES_PER_VALUE[dtype]
    have = physical_memory_bytes()
    if have is not None and need > have:
        raise UsageError(
            f"{source}: its {dtype} weights need {need / 2**30:,.0f} GiB, more than this machine's "
            f"{have / 2**30:,.0f} GiB of memory; use a smaller model (e.g. --preset tiny or medium)"
        )

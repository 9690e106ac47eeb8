"""YaRN scalar formulas shared by the config (softmax scale) and dsv3-rope (cos/sin scale).

One source for `get_mscale`, so the attention scale and the rotary scale can never drift apart.
Reference: transformers `modeling_rope_utils.py` (`get_mscale`) and DeepSeek `inference/model.py`.
"""

from __future__ import annotations

import math


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN magnitude correction `0.1 * mscale * ln(scale) + 1`, and 1.0 when `scale <= 1`."""
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0

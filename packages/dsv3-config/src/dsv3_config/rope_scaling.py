"""The `rope_scaling` block of a Hugging Face config (YaRN or none), validated.

`original_max_position_embeddings`, when a config omits it, is `max_position_embeddings` (what
transformers' `_compute_yarn_parameters` falls back to; `hf_io` fills it in before validation). The NxDI
contrib port silently assumed 4096 instead.

Betas: any positive pair runs in transformers, `beta_fast == beta_slow` included (Kimi-K2 publishes 1.0 and
1.0): its ramp adds 0.001 to `high` when the correction range collapses, and `beta_fast < beta_slow` only logs
a warning. So dsv3 refuses only a beta that is not a positive finite number (a non-positive one makes
`log(original_max / (beta * 2 pi))` undefined; transformers would silently read 0 as its default instead).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from dsv3_config.field_types import FiniteFloat, PositiveFloat, PositiveInt
from dsv3_config.yarn_math import yarn_get_mscale

YarnPolicy = Literal["always", "extended_context_only"]


class YarnScaling(BaseModel):
    """YaRN parameters exactly as the HF config spells them.

    `type` is the legacy key; transformers 5 writes `rope_type`. Both are accepted on input and
    `to_hf()` writes both, as DeepSeek's published configs and transformers 5 do respectively.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    type: Literal["yarn"]
    factor: PositiveFloat
    original_max_position_embeddings: PositiveInt
    beta_fast: PositiveFloat = 32.0
    beta_slow: PositiveFloat = 1.0
    mscale: FiniteFloat = 1.0
    mscale_all_dim: FiniteFloat = 0.0

    @model_validator(mode="before")
    @classmethod
    def _accept_rope_type_spelling(cls, data: object) -> object:
        if isinstance(data, dict):
            data = dict(data)
            rope_type = data.pop("rope_type", None)
            if "type" not in data and rope_type is not None:
                data["type"] = rope_type
            elif rope_type is not None and rope_type != data.get("type"):
                raise ValueError(f"rope_scaling: 'type'={data.get('type')!r} disagrees with 'rope_type'={rope_type!r}")
            # transformers 5 folds rope_theta into rope_parameters; the top-level field owns it.
            data.pop("rope_theta", None)
        return data

    @model_validator(mode="after")
    def _check_magnitudes(self) -> YarnScaling:
        """transformers divides by `get_mscale(factor, mscale_all_dim)`: it must be a nonzero finite number."""
        for name in ("mscale", "mscale_all_dim"):
            value = yarn_get_mscale(self.factor, getattr(self, name))
            if not math.isfinite(value) or value == 0:
                raise ValueError(f"rope_scaling.{name}: get_mscale(factor, {name}) = {value}, must be finite, nonzero")
        return self

    def to_hf(self) -> dict[str, object]:
        return self.model_dump()

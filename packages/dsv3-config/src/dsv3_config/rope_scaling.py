"""The `rope_scaling` block of a Hugging Face config (YaRN or none), validated.

`original_max_position_embeddings` is required for YaRN: the NxDI contrib port silently assumed 4096.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

YarnPolicy = Literal["always", "extended_context_only"]


class YarnScaling(BaseModel):
    """YaRN parameters exactly as the HF config spells them.

    `type` is the legacy key; transformers 5 writes `rope_type`. Both are accepted on input and
    `to_hf()` writes both, as DeepSeek's published configs and transformers 5 do respectively.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["yarn"]
    factor: float = Field(gt=0)
    original_max_position_embeddings: int = Field(gt=0)
    beta_fast: float = Field(default=32.0, gt=0)
    beta_slow: float = Field(default=1.0, gt=0)
    mscale: float = 1.0
    mscale_all_dim: float = 0.0

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
    def _check_betas(self) -> YarnScaling:
        if self.beta_fast <= self.beta_slow:
            raise ValueError(f"rope_scaling.beta_fast ({self.beta_fast}) must exceed beta_slow ({self.beta_slow})")
        return self

    def to_hf(self) -> dict[str, object]:
        return self.model_dump()

"""The FP8 block `quantization_config` of DeepSeek-V3 checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from dsv3_config.field_types import PositiveInt


class Fp8BlockQuantization(BaseModel):
    """`W = fp8 * weight_scale_inv` per `weight_block_size` block (README_WEIGHTS.md of DeepSeek-V3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quant_method: Literal["fp8"]
    fmt: Literal["e4m3"] = "e4m3"
    activation_scheme: Literal["dynamic"] = "dynamic"
    weight_block_size: tuple[PositiveInt, PositiveInt] = (128, 128)
    scale_fmt: str | None = None

    def to_hf(self) -> dict[str, object]:
        out = self.model_dump(exclude_none=True)
        out["weight_block_size"] = list(self.weight_block_size)
        return out

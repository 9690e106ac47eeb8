"""`DeploymentConfig`: how a model is laid out on devices, validated against its `ModelConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, PositiveInt

from dsv3_config.model_config import ModelConfig

Dtype = Literal["bfloat16", "float32", "float16"]
WeightDtype = Literal["bfloat16", "float32", "fp8"]


class DeploymentConfig(BaseModel):
    """Tensor parallel degree `tp` (attention heads, dense MLPs), expert parallel degree `ep`, and
    `moe_tp` (each expert's intermediate dimension), with `ep * moe_tp == tp` on the MoE layers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: PositiveInt = 1
    ep: PositiveInt = 1
    batch_size: PositiveInt = 1
    seq_len: PositiveInt
    activation_dtype: Dtype = "bfloat16"
    weight_dtype: WeightDtype = "bfloat16"

    @property
    def moe_tp(self) -> int:
        return self.tp // self.ep

    def validate_for(self, model: ModelConfig) -> DeploymentConfig:
        """Raise `ValueError` naming every field that cannot work with `model`; return self."""
        problems: list[str] = []
        if model.num_attention_heads % self.tp:
            problems.append(f"tp ({self.tp}) must divide num_attention_heads ({model.num_attention_heads})")
        if model.n_routed_experts % self.ep:
            problems.append(f"ep ({self.ep}) must divide n_routed_experts ({model.n_routed_experts})")
        if self.tp % self.ep:
            problems.append(f"ep ({self.ep}) must divide tp ({self.tp}) so that ep x moe_tp == tp")
        elif model.moe_intermediate_size % self.moe_tp:
            problems.append(
                f"moe_tp = tp/ep ({self.moe_tp}) must divide moe_intermediate_size ({model.moe_intermediate_size})"
            )
        if model.intermediate_size % self.tp:
            problems.append(f"tp ({self.tp}) must divide intermediate_size ({model.intermediate_size})")
        if self.seq_len > model.max_position_embeddings:
            problems.append(
                f"seq_len ({self.seq_len}) exceeds max_position_embeddings ({model.max_position_embeddings})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

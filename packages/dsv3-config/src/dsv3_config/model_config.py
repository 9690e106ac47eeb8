"""`ModelConfig`: a validated, frozen view of a DeepSeek-V3-family Hugging Face `config.json`.

Field names are Hugging Face's, so a config converts to and from `DeepseekV3Config` /
`DeepseekV2Config` as data. Everything the layers need that is *derived* (head dims, cache width,
softmax scale, layer kinds) is computed here once, so no layer recomputes it differently.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from dsv3_config.field_types import NonNegativeInt, PositiveFloat, PositiveInt, TokenId
from dsv3_config.quantization import Fp8BlockQuantization
from dsv3_config.rope_scaling import YarnPolicy, YarnScaling
from dsv3_config.tensor_limits import oversized_tensors
from dsv3_config.yarn_math import yarn_get_mscale

TopkMethod = Literal["noaux_tc", "greedy", "group_limited_greedy"]
ScoringFunc = Literal["sigmoid", "softmax"]


def unsupported_extras(extra: dict[str, Any]) -> list[str]:
    """Keys dsv3 keeps without interpreting, set to a value that would change the model it builds."""
    problems = []
    if extra.get("mlp_bias", False) not in (False, None):
        problems.append(f"mlp_bias ({extra['mlp_bias']!r}): dsv3's MLPs have no bias; only false is supported")
    if extra.get("rope_interleave", True) not in (True, None):
        problems.append(
            f"rope_interleave ({extra['rope_interleave']!r}): dsv3 rotates DeepSeek's interleaved layout; only true"
        )
    return problems


class LayerKind(str, Enum):
    DENSE = "dense"
    MOE = "moe"


class ModelConfig(BaseModel):
    """The architecture of one family member, with Hugging Face's field names.

    `yarn_policy` is the one field HF lacks: whether YaRN frequencies and mscale apply always
    (HF transformers, the default and what dsv3 numerics match) or only when the serving context
    exceeds `original_max_position_embeddings` (DeepSeek's own `inference/model.py`, whose default
    `max_seq_len` 16384 turns it on for V3 anyway). `hf_extra` keeps every key this library does not
    interpret, so `to_hf()` round-trips the input.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model_type: Literal["deepseek_v3", "deepseek_v2", "kimi_k2"]
    vocab_size: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    moe_intermediate_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    n_shared_experts: NonNegativeInt
    n_routed_experts: PositiveInt
    routed_scaling_factor: PositiveFloat
    kv_lora_rank: PositiveInt
    q_lora_rank: PositiveInt | None
    qk_rope_head_dim: PositiveInt
    qk_nope_head_dim: PositiveInt
    v_head_dim: PositiveInt
    topk_method: TopkMethod
    n_group: PositiveInt
    topk_group: PositiveInt
    num_experts_per_tok: PositiveInt
    moe_layer_freq: PositiveInt = 1
    first_k_dense_replace: NonNegativeInt
    norm_topk_prob: StrictBool
    scoring_func: ScoringFunc
    hidden_act: Literal["silu"] = "silu"
    max_position_embeddings: PositiveInt
    rms_norm_eps: PositiveFloat
    rope_theta: PositiveFloat
    rope_scaling: YarnScaling | None = None
    attention_bias: StrictBool = False
    tie_word_embeddings: StrictBool = False
    num_nextn_predict_layers: NonNegativeInt = 0
    quantization_config: Fp8BlockQuantization | None = None
    bos_token_id: TokenId | None = None
    eos_token_id: TokenId | list[TokenId] | None = None
    torch_dtype: Literal["bfloat16", "float32", "float16"] | None = None
    yarn_policy: YarnPolicy = "always"
    hf_extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        problems: list[str] = []
        if self.topk_group > self.n_group:
            problems.append(f"topk_group ({self.topk_group}) exceeds n_group ({self.n_group})")
        if self.n_routed_experts % self.n_group:
            problems.append(f"n_routed_experts ({self.n_routed_experts}) is not divisible by n_group ({self.n_group})")
        elif self.num_experts_per_tok > self.topk_group * (self.n_routed_experts // self.n_group):
            problems.append(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds the "
                f"{self.topk_group * (self.n_routed_experts // self.n_group)} experts in topk_group groups"
            )
        if self.topk_method == "noaux_tc" and self.scoring_func != "sigmoid":
            problems.append(f"topk_method 'noaux_tc' needs scoring_func 'sigmoid', got {self.scoring_func!r}")
        if self.topk_method != "noaux_tc" and self.scoring_func != "softmax":
            problems.append(f"topk_method {self.topk_method!r} needs scoring_func 'softmax', got {self.scoring_func!r}")
        if self.qk_rope_head_dim % 2:
            problems.append(f"qk_rope_head_dim ({self.qk_rope_head_dim}) must be even")
        if self.num_key_value_heads != self.num_attention_heads:
            problems.append(
                f"num_key_value_heads ({self.num_key_value_heads}) must equal num_attention_heads "
                f"({self.num_attention_heads}) in MLA"
            )
        problems += unsupported_extras(self.hf_extra)
        problems += oversized_tensors(self)
        if not problems and not 0 < self.softmax_scale < math.inf:
            problems.append(f"rope_scaling: the softmax scale comes out as {self.softmax_scale}, not a positive number")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- derived values -------------------------------------------------------------------

    @property
    def qk_head_dim(self) -> int:
        """Per-head query/key width: nope + rope (192 for V3), not the 576 latent."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_cache_width(self) -> int:
        """Values cached per token per layer: the compressed latent plus the shared rope key (576 for V3)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def uses_yarn(self) -> bool:
        return self.rope_scaling is not None

    @property
    def softmax_scale(self) -> float:
        """`qk_head_dim^-0.5`, times `get_mscale(factor, mscale_all_dim)^2` under YaRN (V3: 0.1352338).

        V2 in transformers 4.57 never applies the mscale to the softmax; V3 does when
        `mscale_all_dim` is truthy (docs/numerics.md section 2 and 7).
        """
        scale = self.qk_head_dim**-0.5
        if self.model_type != "deepseek_v2" and self.rope_scaling is not None and self.rope_scaling.mscale_all_dim:
            mscale = yarn_get_mscale(self.rope_scaling.factor, self.rope_scaling.mscale_all_dim)
            scale *= mscale * mscale
        return scale

    @property
    def experts_per_group(self) -> int:
        return self.n_routed_experts // self.n_group

    def layer_kind(self, layer_idx: int) -> LayerKind:
        """Dense for the first `first_k_dense_replace` layers, then MoE every `moe_layer_freq` layers."""
        if not 0 <= layer_idx < self.num_hidden_layers + self.num_nextn_predict_layers:
            raise IndexError(
                f"layer_idx {layer_idx} outside 0..{self.num_hidden_layers + self.num_nextn_predict_layers - 1}"
            )
        if layer_idx >= self.first_k_dense_replace and layer_idx % self.moe_layer_freq == 0:
            return LayerKind.MOE
        return LayerKind.DENSE

    @property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        """One kind per decoder layer: a tuple as long as `num_hidden_layers` (use `num_moe_layers` for counts)."""
        return tuple(self.layer_kind(i) for i in range(self.num_hidden_layers))

    @property
    def num_moe_layers(self) -> int:
        """How many of the `num_hidden_layers` decoder layers are MoE, in closed form (no loop over layers):
        the multiples of `moe_layer_freq` in `[first_k_dense_replace, num_hidden_layers)`."""
        last, first = self.num_hidden_layers - 1, self.first_k_dense_replace
        if first > last:
            return 0
        return last // self.moe_layer_freq - (first - 1) // self.moe_layer_freq

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers

    @property
    def rope_scaling_factor(self) -> float:
        return 1.0 if self.rope_scaling is None else self.rope_scaling.factor

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with `changes` applied (pydantic's `model_copy` skips validation)."""
        data = self.model_dump()
        data.update(changes)
        return type(self).model_validate(data)

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict; `load_config(cfg.to_hf()) == cfg`."""
        from dsv3_config.hf_io import config_to_hf

        return config_to_hf(self)

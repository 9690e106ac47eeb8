"""NxDI configuration classes for dsv3 models, derived from one validated `dsv3_config.ModelConfig`.

NxDI builds the inference config as `cls(neuron_config, load_config=load_pretrained_config(path))`,
which copies the HF `config.json` into attributes, and reloads it later with `cls(**saved)` from
`neuron_config.json` (NxDI `models/config.py:853-876`, `:983-1038`). Both paths end in
`add_derived_config`, which here parses the HF keys once into a `ModelConfig` (the only place config
values are validated) and stores its HF dict as `dsv3_hf_config`; on reload that stored dict is the
source, so the NxDI aliases below (which overwrite HF names such as `intermediate_size`) never feed
back into the model config.

NxDI attributes derived here (docs/nxdi-contract.md sections 2, 6, 11, 18): `intermediate_size` is the
*expert* width (read by `initialize_moe_module`), the dense width is `dense_intermediate_size`;
`num_local_experts`; `num_key_value_heads = 1` and `head_dim = kv_lora_rank + qk_rope_head_dim` (the one
latent per token; the KV manager of `kv_cache.py` allocates it split, without a duplicate).
"""

from __future__ import annotations

from typing import Any

import torch
from neuronx_distributed_inference.models.config import InferenceConfig, MoENeuronConfig

from dsv3_config import ConfigError, ModelConfig, load_config
from dsv3_config.inventory.fp8_experts import Fp8ExpertGrid, fp8_expert_grid
from dsv3_config.inventory.placements import (
    DEVICE_WEIGHT_FORMATS,
    FP8_EXPERT_FORMATS,
    default_weight_format,
    expert_parallel_min_tokens,
)

# NeuronConfig switches whose code paths the dsv3 layers do not implement (each changes the layer contract:
# per-layer KV I/O, speculation, sequence/context/data parallel attention, other cache layouts).
UNSUPPORTED_WHEN_TRUE = (
    "layer_boundary_markers",
    "sequence_parallel_enabled",
    "enable_fused_speculation",
    "is_medusa",
    "flash_decoding_enabled",
    "k_cache_transposed",
    "kv_cache_quant",
    "quantized",  # NxDI's whole-model quantization; dsv3 keeps FP8 weights by `dsv3_weights` (below)
)
UNSUPPORTED_ABOVE = {"speculation_length": 0, "cp_degree": 1, "attention_dp_degree": 1}

# HF config.json keys that describe the model (ModelConfig's fields that HF writes).
_DSV3_ONLY_FIELDS = frozenset({"yarn_policy", "hf_extra", "torch_dtype"})
HF_MODEL_KEYS = tuple(name for name in ModelConfig.model_fields if name not in _DSV3_ONLY_FIELDS)


class Dsv3NeuronConfig(MoENeuronConfig):
    """`MoENeuronConfig` whose router settings follow dsv3: the router normalizes and scales itself."""

    def __init__(self, **kwargs: Any) -> None:
        for key in (
            "router_config",
            "router_dtype",
            "router_act_fn",
            "normalize_top_k_affinities",
            "disable_normalize_top_k_affinities",
        ):
            kwargs.pop(key, None)  # fixed below; also present in a saved neuron_config.json
        chunked = _chunked_prefill_requested(kwargs)
        if chunked:
            if not kwargs.get("is_block_kv_layout"):
                raise ConfigError(
                    "Dsv3NeuronConfig: chunked prefill needs is_block_kv_layout=True (its chunks live in blocks)"
                )
            kwargs["is_prefix_caching"] = True
        weights = _weights_option(kwargs)
        super().__init__(router_config={"dtype": torch.float32}, disable_normalize_top_k_affinities=True, **kwargs)
        self.dsv3_chunked_prefill = chunked
        # One of `DEVICE_WEIGHT_FORMATS`; None: the checkpoint's default, resolved (and checked against the
        # checkpoint) by `Dsv3InferenceConfig` once the model config is known.
        self.dsv3_weights = weights


def _weights_option(kwargs: dict[str, Any]) -> str | None:
    """`dsv3_weights` (or its earlier name `dsv3_expert_weights`, same values), popped from `kwargs` and checked
    against `DEVICE_WEIGHT_FORMATS`; giving both with different values is refused."""
    popped = {name: kwargs.pop(name, None) for name in ("dsv3_weights", "dsv3_expert_weights")}
    given = {name: value for name, value in popped.items() if value is not None}
    if len(set(given.values())) > 1:
        raise ConfigError(f"Dsv3NeuronConfig: {given} disagree; dsv3_expert_weights is dsv3_weights' earlier name")
    for name, value in given.items():
        if value not in DEVICE_WEIGHT_FORMATS:
            raise ConfigError(f"Dsv3NeuronConfig: {name}={value!r}; known: {', '.join(DEVICE_WEIGHT_FORMATS)}")
    return next(iter(given.values()), None)


def _chunked_prefill_requested(kwargs: dict[str, Any]) -> bool:
    """Whether `kwargs` ask for chunked prefill: NxDI's `chunked_prefill_config`, `is_chunked_prefill=True` (the
    attribute NxDI derives from it), or the `dsv3_chunked_prefill` a saved config carries; pops the three keys.

    NxDI's application class raises for `is_chunked_prefill` (`models/model_base.py:3054-3055`): its own
    form packs several requests into one row for NKI kernels. dsv3 prefills a chunk as what it is, a
    prefill whose earlier tokens are already in the block cache: NxDI's prefix-caching flow (each call
    names the cached blocks in `block_table` and how many tokens they hold in `computed_context_lens`),
    so the flag turns on `is_prefix_caching` and stays off for NxDI (docs/nxdi-contract.md section 6).
    """
    config = kwargs.pop("chunked_prefill_config", None)
    flag = bool(kwargs.pop("is_chunked_prefill", False))
    saved = bool(kwargs.pop("dsv3_chunked_prefill", False))
    return config is not None or flag or saved


class Dsv3InferenceConfig(InferenceConfig):
    """NxDI `InferenceConfig` for the DeepSeek-V3 family (V3/R1, V2/V2-Lite, Kimi-K2, Moonlight)."""

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, neuron_config: Dsv3NeuronConfig, **kwargs: Any) -> Dsv3InferenceConfig:
        """Build directly from a `ModelConfig` (tests, `dsv3` tools) instead of an HF directory."""
        return cls(neuron_config, dsv3_hf_config=cfg.to_hf(), **kwargs)

    @classmethod
    def get_neuron_config_cls(cls) -> type[Dsv3NeuronConfig]:
        return Dsv3NeuronConfig

    def model_config(self) -> ModelConfig:
        return load_config(self.dsv3_hf_config)

    def add_derived_config(self) -> None:
        attributes = self.__dict__
        if "dsv3_hf_config" not in attributes:  # first build: the HF keys NxDI's loader copied in
            missing = [key for key in ("model_type", "hidden_size") if key not in attributes]
            if missing:
                raise ValueError(
                    f"Dsv3InferenceConfig: no HF config given (missing {missing}); pass "
                    "load_config=load_pretrained_config(path) or use from_model_config"
                )
            self.dsv3_hf_config = {key: attributes[key] for key in HF_MODEL_KEYS if key in attributes}
        cfg = load_config(self.dsv3_hf_config)
        self.dsv3_hf_config = cfg.to_hf()
        self._set_nxdi_attributes(cfg)

    def _set_nxdi_attributes(self, cfg: ModelConfig) -> None:
        hf = cfg.to_hf()
        for key in HF_MODEL_KEYS:
            if key in hf:
                setattr(self, key, hf[key])
        self.num_cores_per_group = 1
        self.dense_intermediate_size = cfg.intermediate_size
        self.intermediate_size = cfg.moe_intermediate_size
        self.num_local_experts = cfg.n_routed_experts
        self.num_key_value_heads = 1
        self.head_dim = cfg.latent_cache_width
        if "pad_token_id" not in self.__dict__:
            self.pad_token_id = None  # NxDI's "unset"; its model wrapper then uses 0
        self.output_attentions = False
        self.output_hidden_states = False
        neuron_config = self.neuron_config
        neuron_config.normalize_top_k_affinities = False  # dsv3's router normalizes and scales
        neuron_config.router_config.dtype = torch.float32
        neuron_config.router_config.act_fn = cfg.scoring_func
        neuron_config.disable_numeric_cc_token = True  # as the contrib port (all-gather/reduce-scatter workaround)
        neuron_config.dsv3_weights = _resolved_weights(cfg, neuron_config)

    def fp8_expert_grid(self) -> Fp8ExpertGrid | None:
        """The device grid of FP8 routed experts (None: BF16 experts); moe_tp as NxD's MoE groups have it."""
        neuron_config = self.neuron_config
        if neuron_config.dsv3_weights not in FP8_EXPERT_FORMATS:
            return None
        return fp8_expert_grid(self.model_config(), neuron_config.tp_degree // neuron_config.moe_ep_degree)

    def fp8_linears(self) -> bool:
        """Whether the other linears `dsv3_config.inventory.fp8_linears` names are held FP8 (weights `fp8`)."""
        return bool(self.neuron_config.dsv3_weights == "fp8")

    def validate_config(self) -> None:
        super().validate_config()
        neuron_config = self.neuron_config
        enabled = [name for name in UNSUPPORTED_WHEN_TRUE if getattr(neuron_config, name)]
        enabled += [
            f"{name}={getattr(neuron_config, name)}"
            for name, limit in UNSUPPORTED_ABOVE.items()
            if getattr(neuron_config, name) > limit
        ]
        if neuron_config.hybrid_sharding_config is not None:
            enabled.append("hybrid_sharding_config")
        if enabled:
            hint = " (FP8 weights: dsv3_weights='fp8-experts' or 'fp8')" if "quantized" in enabled else ""
            raise ValueError(
                f"Dsv3InferenceConfig: NeuronConfig options not supported by the dsv3 layers: {enabled}{hint}"
            )
        self._validate_block_layout()
        self._validate_expert_parallel()
        self._validate_splits()

    def _validate_splits(self) -> None:
        """The latent projections split hidden over tp, the router splits the experts (`dsv3_mla.mla_shard_plan`,
        `dsv3_moe.moe_shard_plan`); NxD's parallel layers need both to divide."""
        cfg, tp = self.model_config(), self.neuron_config.tp_degree
        for name, size in (("hidden_size", cfg.hidden_size), ("n_routed_experts", cfg.n_routed_experts)):
            if size % tp:
                raise ValueError(
                    f"Dsv3InferenceConfig: {name}={size} is not divisible by tp_degree={tp} (q_a_proj and "
                    "kv_a_proj_with_mqa split hidden_size over tp, the router weight splits n_routed_experts)"
                )

    def _validate_block_layout(self) -> None:
        """The block KV layout and prefix caching come together: NxDI passes `slot_mapping` and
        `active_block_table` to the model only under `is_prefix_caching` (`models/model_base.py:3566-3610`),
        and builds its block manager only under `is_block_kv_layout` (`:170`)."""
        neuron_config = self.neuron_config
        block, prefix = neuron_config.is_block_kv_layout, neuron_config.is_prefix_caching
        if block != prefix:
            raise ConfigError(
                f"Dsv3InferenceConfig: is_block_kv_layout={block} with is_prefix_caching={prefix}: the dsv3 "
                "block cache is read and written only through NxDI's prefix-caching inputs; set both (vLLM's "
                "Neuron plugin does when prefix caching is on) or neither"
            )

    def _validate_expert_parallel(self) -> None:
        """`moe_ep_degree` x `moe_tp_degree` must be the world (`dsv3 shard --ep` and NxD's MoE groups assume it)."""
        neuron_config = self.neuron_config
        ep, moe_tp = neuron_config.moe_ep_degree, neuron_config.moe_tp_degree
        if ep == 1:
            return
        if ep * moe_tp != neuron_config.tp_degree:
            raise ValueError(
                f"Dsv3InferenceConfig: moe_ep_degree={ep} x moe_tp_degree={moe_tp} must equal "
                f"tp_degree={neuron_config.tp_degree}"
            )
        cfg = self.model_config()
        experts = cfg.n_routed_experts
        if experts % ep:
            raise ValueError(f"Dsv3InferenceConfig: moe_ep_degree={ep} does not divide n_routed_experts={experts}")
        self._validate_expert_parallel_tokens(cfg)

    def _validate_expert_parallel_tokens(self, cfg: ModelConfig) -> None:
        """NxD runs an expert-parallel MoE step only when every expert may be loaded: with `tokens x top_k <
        experts` it takes its selective-loading path, which raises under EP in token generation and indexes
        the local expert stack with global ids in context encoding (NxD `modules/moe/expert_mlps_v2.py:1468-1490`,
        `:595-625`). So each graph needs `expert_parallel_min_tokens` tokens (the rule the planner applies too;
        V3: 32): batch-1 decode under EP is refused here."""
        neuron_config, needed = self.neuron_config, expert_parallel_min_tokens(cfg)
        smallest_context = neuron_config.ctx_batch_size * _smallest_context_bucket(neuron_config)
        graphs = {
            "tkg_batch_size": neuron_config.tkg_batch_size,
            "ctx_batch_size x smallest context bucket": smallest_context,
        }
        for label, tokens in graphs.items():
            if tokens < needed:
                raise ValueError(
                    f"Dsv3InferenceConfig: moe_ep_degree={neuron_config.moe_ep_degree} needs {label} x "
                    f"num_experts_per_tok >= n_routed_experts, got {tokens} x {cfg.num_experts_per_tok} < "
                    f"{cfg.n_routed_experts} (NxD has no expert-parallel path for fewer tokens); use "
                    f"moe_ep_degree=1 or at least {needed} tokens per step"
                )

    def get_required_attributes(self) -> list[str]:
        return ["dsv3_hf_config", "num_local_experts", "dense_intermediate_size", "head_dim"]


def _resolved_weights(cfg: ModelConfig, neuron_config: Any) -> str:
    """`dsv3_weights` resolved: as asked, or FP8 routed experts for an FP8 checkpoint where they run.

    CPU mode in BF16 is the one place they do not: NxDI's `to_cpu()` calls `.bfloat16()` on the model, which
    casts FP8 parameters too (`models/application_base.py:599-602`); the default there is BF16 experts.
    """
    asked = neuron_config.dsv3_weights
    cpu_low_precision = bool(neuron_config.on_cpu) and neuron_config.torch_dtype != torch.float32
    if asked is None:
        default = default_weight_format(cfg)
        return "bf16" if cpu_low_precision else default
    if asked != "bf16" and cfg.quantization_config is None:
        raise ConfigError(
            f"Dsv3NeuronConfig: dsv3_weights={asked!r} needs an FP8 checkpoint (config.json has no "
            "quantization_config); BF16 weights are not quantized here"
        )
    if asked != "bf16" and cpu_low_precision:
        raise ConfigError(
            f"Dsv3NeuronConfig: dsv3_weights={asked!r} with on_cpu and "
            f"torch_dtype={neuron_config.torch_dtype}: NxDI's to_cpu() casts FP8 parameters to that dtype; "
            "use torch_dtype=float32 on CPU"
        )
    return str(asked)


def _smallest_context_bucket(neuron_config: Any) -> int:
    """Tokens per row of the smallest context-encoding graph: the given buckets, NxDI's automatic ones (from 128,
    `modules/autobucketing.py:149-160`), or the one `max_context_length` graph without bucketing."""
    if not neuron_config.enable_bucketing:
        return int(neuron_config.max_context_length)
    if neuron_config.context_encoding_buckets:
        return int(min(neuron_config.context_encoding_buckets))
    return int(min(128, neuron_config.max_context_length))

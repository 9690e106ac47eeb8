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
        super().__init__(router_config={"dtype": torch.float32}, disable_normalize_top_k_affinities=True, **kwargs)
        self.dsv3_chunked_prefill = chunked


def _chunked_prefill_requested(kwargs: dict[str, Any]) -> bool:
    """Whether `kwargs` ask for chunked prefill (NxDI's `chunked_prefill_config`, or `is_chunked_prefill` as a
    saved config and the plugin's overrides name it); pops the three keys.

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
            raise ValueError(f"Dsv3InferenceConfig: NeuronConfig options not supported by the dsv3 layers: {enabled}")
        self._validate_block_layout()
        self._validate_expert_parallel()

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
        experts = self.model_config().n_routed_experts
        if experts % ep:
            raise ValueError(f"Dsv3InferenceConfig: moe_ep_degree={ep} does not divide n_routed_experts={experts}")

    def get_required_attributes(self) -> list[str]:
        return ["dsv3_hf_config", "num_local_experts", "dense_intermediate_size", "head_dim"]

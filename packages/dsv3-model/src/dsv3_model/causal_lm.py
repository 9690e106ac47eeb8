"""`DeepseekForCausalLM`: the DeepSeek-V3 family causal LM composed from dsv3-mla and dsv3-moe.

Module names follow transformers' `DeepseekV3ForCausalLM` (`model.embed_tokens`, `model.layers.{i}`,
`model.norm`, `lm_head`), so a state dict maps key for key; the only difference is that routed experts
are stacked (`mlp.experts.gate_up_proj` / `down_proj`), which dsv3-moe declares as data. The MTP layer,
when built, sits at `model.layers[num_hidden_layers]` exactly where the checkpoint keys put it, and the
forward pass stops before it.

Calls take right-padded `input_ids_BS`, per-row `position_ids_BS`, one `LatentCache` per layer and the
real-token count of each row, `seq_lengths_B` (see dsv3_mla.attention for the padding convention).

Shape legend: B batch, S tokens, D hidden size, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_config import LayerKind, ModelConfig
from dsv3_mla import LatentCache, MultiHeadLatentAttention
from dsv3_model.decoder_layer import DecoderLayer, MultiTokenPredictionLayer
from dsv3_model.parts import PLAIN_PARTS, ModelParts, plain_lm_head
from dsv3_model.row_products import row_products_backend_for
from dsv3_moe import SwiGLUMLP, build_deepseek_moe
from dsv3_weights.fp8 import denormals_kept


def build_attention(cfg: ModelConfig, parts: ModelParts = PLAIN_PARTS, prefix: str = "") -> MultiHeadLatentAttention:
    """MLA over the projections `parts` builds for the module at `prefix` (plain `nn.Linear` by default,
    the same layers dsv3-moe's factory builds for the MLPs)."""
    return MultiHeadLatentAttention(cfg, linear_factory=parts.linear_factory(prefix))


def build_mlp(cfg: ModelConfig, layer_idx: int, parts: ModelParts = PLAIN_PARTS, prefix: str = "") -> nn.Module:
    """The dense SwiGLU MLP or the DeepseekMoE block that `cfg.layer_kind(layer_idx)` asks for, its
    projections and routed experts built by `parts` for the module at `prefix`."""
    if cfg.layer_kind(layer_idx) is LayerKind.DENSE:
        return SwiGLUMLP(cfg.hidden_size, cfg.intermediate_size, linear_factory=parts.linear_factory(prefix))
    return build_deepseek_moe(
        cfg,
        linear_factory=parts.linear_factory(f"{prefix}shared_experts."),
        experts=parts.experts(prefix, cfg),
    )


def _layer(cfg: ModelConfig, i: int, parts: ModelParts, kind: type[DecoderLayer]) -> DecoderLayer:
    prefix = f"model.layers.{i}."
    return kind(
        cfg,
        self_attn=build_attention(cfg, parts, f"{prefix}self_attn."),
        mlp=build_mlp(cfg, i, parts, f"{prefix}mlp."),
    )


class DeepseekModel(nn.Module):
    def __init__(self, cfg: ModelConfig, *, include_mtp: bool, parts: ModelParts = PLAIN_PARTS) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        layers: list[nn.Module] = [_layer(cfg, i, parts, DecoderLayer) for i in range(cfg.num_hidden_layers)]
        if include_mtp:
            layers += [
                _layer(cfg, i, parts, MultiTokenPredictionLayer)
                for i in range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_nextn_predict_layers)
            ]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.num_hidden_layers = cfg.num_hidden_layers

    def forward(
        self,
        input_ids_BS: torch.Tensor,
        position_ids_BS: torch.Tensor,
        caches: list[LatentCache] | None,
        seq_lengths_B: torch.Tensor | None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, S, D]."""
        if caches is not None and len(caches) != self.num_hidden_layers:
            raise ValueError(f"expected {self.num_hidden_layers} layer caches, got {len(caches)}")
        hidden_BSD = self.embed_tokens(input_ids_BS)
        for i in range(self.num_hidden_layers):
            hidden_BSD = self.layers[i](
                hidden_BSD, position_ids_BS, None if caches is None else caches[i], seq_lengths_B
            )
        return self.norm(hidden_BSD)


class DeepseekForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, *, include_mtp: bool = False, parts: ModelParts = PLAIN_PARTS) -> None:
        super().__init__()
        if include_mtp and not cfg.num_nextn_predict_layers:
            raise ValueError("include_mtp=True but the config has num_nextn_predict_layers = 0")
        self.config = cfg
        self.model = DeepseekModel(cfg, include_mtp=include_mtp, parts=parts)
        if cfg.tie_word_embeddings:
            self.lm_head = plain_lm_head(cfg)
            self.lm_head.weight = self.model.embed_tokens.weight
        else:
            self.lm_head = parts.lm_head(cfg)
        self._compiled_steps: dict[tuple[str | None, bool], Callable[..., torch.Tensor]] = {}
        # (batch, cache length) pairs `generate` has run through the compiled step in this process
        self.compiled_shapes: set[tuple[int, int]] = set()

    @property
    def mtp_layers(self) -> list[MultiTokenPredictionLayer]:
        return [layer for layer in self.model.layers if isinstance(layer, MultiTokenPredictionLayer)]

    def new_cache(self, batch_size: int, max_len: int) -> list[LatentCache]:
        """One zeroed latent cache per layer: `latent_cache_width` values per token, in the model dtype
        (the final norm's, which every variant holds, streamed ones included: dsv3_model.golden)."""
        like = self.model.norm.weight
        return LatentCache.empty_layers(
            self.config, self.config.num_hidden_layers, batch_size, max_len, dtype=like.dtype, device=like.device
        )

    def forward(
        self,
        input_ids_BS: torch.Tensor,
        position_ids_BS: torch.Tensor | None = None,
        caches: list[LatentCache] | None = None,
        seq_lengths_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] (in the model dtype). Without a cache, tokens attend within the call.

        The positions are checked against the cache here, where they enter, when running eagerly on a
        CPU or CUDA device (a host sync); traced or compiled steps (`torch.compile`, torch_xla) trust them
        (`step` skips the check), as every layer's cache write does."""
        if position_ids_BS is None:
            position_ids_BS = torch.arange(input_ids_BS.shape[1], device=input_ids_BS.device).expand_as(input_ids_BS)
        if caches and not torch.compiler.is_compiling() and position_ids_BS.device.type in ("cpu", "cuda"):
            caches[0].check_positions(position_ids_BS)
        return self.step(input_ids_BS, position_ids_BS, caches, seq_lengths_B)

    def step(
        self,
        input_ids_BS: torch.Tensor,
        position_ids_BS: torch.Tensor,
        caches: list[LatentCache] | None,
        seq_lengths_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`forward` without the host-side position check: the traceable step (static shapes, no host
        sync), for compilers and tracers; the caller guarantees the positions fit the caches."""
        return self.lm_head(self.model(input_ids_BS, position_ids_BS, caches, seq_lengths_B))

    def compiled_step(self, mode: str | None = None) -> Callable[..., torch.Tensor]:
        """`torch.compile(self.step, fullgraph=True, dynamic=False, mode=mode)`, made once per model and mode.

        Why it is kept here: dynamo's compiled graphs hang off `step`'s code object, guarded by the
        `torch.compile` call that made them, so a fresh `torch.compile` per `generate` call compiles the
        whole model again. One wrapper per model reuses its graphs for every call of the same shapes
        (batch size and cache length); a new shape compiles once more.

        On a CPU (and no `mode`), one-row products compile to fused reductions and FP8 weights decode by bit
        operations (`dsv3_model.row_products`), whose fastest form needs denormals kept: that mode is probed
        at each call and is part of the key, so a step compiled before `torch.set_flush_denormal(True)` is
        not used after it."""
        on_cpu = self.model.norm.weight.device.type == "cpu" and mode is None
        key = (mode, on_cpu and denormals_kept())
        if key not in self._compiled_steps:
            backend = row_products_backend_for(key[1]) if on_cpu else "inductor"
            self._compiled_steps[key] = torch.compile(
                self.step, fullgraph=True, dynamic=False, mode=mode, backend=backend
            )
        return self._compiled_steps[key]

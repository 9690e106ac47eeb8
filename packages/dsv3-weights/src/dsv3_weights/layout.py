"""The tensors a `ModelConfig` implies in the Hugging Face / DeepSeek checkpoint layout, as data.

One `TensorSpec` per logical weight: its HF name, shape, stored dtype when not FP8, whether DeepSeek's
FP8 release stores it as `float8_e4m3fn` with a `weight_scale_inv` (every Linear of attention, dense
MLP, routed and shared experts: DeepSeek `inference/model.py:760`; not embeddings, norms, the router's
`gate.weight` (bf16) and `e_score_correction_bias` (fp32), `lm_head`, nor the MTP `eh_proj`, which the
V3 release stores in BF16), and whether it belongs to an MTP layer (index >= `num_hidden_layers`,
docs/numerics.md section 10; DeepSeek ships the MTP layer's own `embed_tokens` and `shared_head.head` too).
make-checkpoint, verify-checkpoint, convert and the model loader all read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsv3_config import LayerKind, ModelConfig

SCALE_SUFFIX = "_scale_inv"  # `x.weight` -> `x.weight_scale_inv`


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype  # dtype in an unquantized checkpoint of `torch_dtype` bfloat16
    fp8: bool  # stored FP8 with a `weight_scale_inv` in DeepSeek's FP8 release
    mtp: bool  # part of a multi-token-prediction layer

    @property
    def scale_name(self) -> str:
        return self.name + SCALE_SUFFIX


def scale_name(weight_name: str) -> str:
    return weight_name + SCALE_SUFFIX


def _attention(cfg: ModelConfig, p: str) -> list[tuple[str, tuple[int, ...], bool]]:
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    out: list[tuple[str, tuple[int, ...], bool]] = []
    if cfg.q_lora_rank is None:
        out.append((f"{p}q_proj.weight", (heads * cfg.qk_head_dim, hidden), True))
    else:
        out += [
            (f"{p}q_a_proj.weight", (cfg.q_lora_rank, hidden), True),
            (f"{p}q_a_layernorm.weight", (cfg.q_lora_rank,), False),
            (f"{p}q_b_proj.weight", (heads * cfg.qk_head_dim, cfg.q_lora_rank), True),
        ]
    out += [
        (f"{p}kv_a_proj_with_mqa.weight", (cfg.latent_cache_width, hidden), True),
        (f"{p}kv_a_layernorm.weight", (cfg.kv_lora_rank,), False),
        (f"{p}kv_b_proj.weight", (heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank), True),
        (f"{p}o_proj.weight", (hidden, heads * cfg.v_head_dim), True),
    ]
    if cfg.attention_bias:  # HF: bias on q_a_proj, kv_a_proj_with_mqa and o_proj only
        if cfg.q_lora_rank is not None:
            out.append((f"{p}q_a_proj.bias", (cfg.q_lora_rank,), False))
        out += [
            (f"{p}kv_a_proj_with_mqa.bias", (cfg.latent_cache_width,), False),
            (f"{p}o_proj.bias", (hidden,), False),
        ]
    return out


def _mlp(p: str, hidden: int, intermediate: int) -> list[tuple[str, tuple[int, ...], bool]]:
    return [
        (f"{p}gate_proj.weight", (intermediate, hidden), True),
        (f"{p}up_proj.weight", (intermediate, hidden), True),
        (f"{p}down_proj.weight", (hidden, intermediate), True),
    ]


def _moe(cfg: ModelConfig, p: str) -> list[tuple[str, tuple[int, ...], bool]]:
    out: list[tuple[str, tuple[int, ...], bool]] = [(f"{p}gate.weight", (cfg.n_routed_experts, cfg.hidden_size), False)]
    if cfg.topk_method == "noaux_tc":
        out.append((f"{p}gate.e_score_correction_bias", (cfg.n_routed_experts,), False))
    for e in range(cfg.n_routed_experts):
        out += _mlp(f"{p}experts.{e}.", cfg.hidden_size, cfg.moe_intermediate_size)
    if cfg.n_shared_experts:
        out += _mlp(f"{p}shared_experts.", cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
    return out


def _decoder_layer(cfg: ModelConfig, i: int) -> list[tuple[str, tuple[int, ...], bool]]:
    p, hidden = f"model.layers.{i}.", cfg.hidden_size
    out = [(f"{p}input_layernorm.weight", (hidden,), False), *_attention(cfg, f"{p}self_attn.")]
    out.append((f"{p}post_attention_layernorm.weight", (hidden,), False))
    if cfg.layer_kind(i) is LayerKind.MOE:
        out += _moe(cfg, f"{p}mlp.")
    else:
        out += _mlp(f"{p}mlp.", hidden, cfg.intermediate_size)
    return out


def _mtp_extras(cfg: ModelConfig, i: int) -> list[tuple[str, tuple[int, ...], bool]]:
    p, hidden, vocab = f"model.layers.{i}.", cfg.hidden_size, cfg.vocab_size
    return [
        (f"{p}embed_tokens.weight", (vocab, hidden), False),
        (f"{p}enorm.weight", (hidden,), False),
        (f"{p}hnorm.weight", (hidden,), False),
        (f"{p}eh_proj.weight", (hidden, 2 * hidden), False),
        (f"{p}shared_head.norm.weight", (hidden,), False),
        (f"{p}shared_head.head.weight", (vocab, hidden), False),
    ]


def _spec(name: str, shape: tuple[int, ...], fp8: bool, mtp: bool) -> TensorSpec:
    dtype = torch.float32 if name.endswith("e_score_correction_bias") else torch.bfloat16
    return TensorSpec(name, shape, dtype, fp8, mtp)


def checkpoint_layout(cfg: ModelConfig, *, include_mtp: bool = True) -> dict[str, TensorSpec]:
    """Every logical weight of the checkpoint `cfg` describes, by HF name (scales not listed: see `stored_tensors`)."""
    rows: list[tuple[str, tuple[int, ...], bool]] = [
        ("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size), False)
    ]
    for i in range(cfg.num_hidden_layers):
        rows += _decoder_layer(cfg, i)
    rows.append(("model.norm.weight", (cfg.hidden_size,), False))
    if not cfg.tie_word_embeddings:
        rows.append(("lm_head.weight", (cfg.vocab_size, cfg.hidden_size), False))
    specs = {name: _spec(name, shape, fp8, mtp=False) for name, shape, fp8 in rows}
    if include_mtp:
        for i in range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_nextn_predict_layers):
            for name, shape, fp8 in [*_mtp_extras(cfg, i), *_decoder_layer(cfg, i)]:
                specs[name] = _spec(name, shape, fp8, mtp=True)
    return specs


def stored_tensors(
    layout: dict[str, TensorSpec], *, quantized_block: tuple[int, int] | None, dense_dtype: torch.dtype = torch.bfloat16
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor stored on disk.

    With `quantized_block`, FP8 weights are `float8_e4m3fn` plus an fp32 `weight_scale_inv` grid;
    without, they are `dense_dtype` (the dtype a conversion wrote). Other tensors keep their spec dtype.
    """
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for spec in layout.values():
        if spec.fp8 and quantized_block is not None:
            grid = (-(-spec.shape[0] // quantized_block[0]), -(-spec.shape[1] // quantized_block[1]))
            out[spec.name] = (spec.shape, torch.float8_e4m3fn)
            out[spec.scale_name] = (grid, torch.float32)
        else:
            out[spec.name] = (spec.shape, dense_dtype if spec.fp8 else spec.dtype)
    return out

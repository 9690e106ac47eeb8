"""The whole causal LM's tensors under their checkpoint names (`model.embed_tokens.weight`,
`model.layers.{i}.self_attn.q_a_proj.weight`, `lm_head.weight`, ...), built from the module declarations.

`lm_head.weight` is absent under `tie_word_embeddings` (the head is the embedding). MTP layers (index
`num_hidden_layers` and up, `num_nextn_predict_layers` of them, docs/numerics.md section 10) hold one
decoder layer of that index's kind plus `embed_tokens`, `enorm`, `hnorm`, `eh_proj` (2h -> h) and
`shared_head.norm` / `shared_head.head`; DeepSeek's release stores all of them, none FP8.
"""

from __future__ import annotations

from collections.abc import Iterator

from dsv3_config.inventory import placements as at
from dsv3_config.inventory.attention import attention_tensors
from dsv3_config.inventory.mlp import mlp_tensors
from dsv3_config.inventory.records import TensorDecl, under, unstacked
from dsv3_config.model_config import LayerKind, ModelConfig


def decoder_layer_tensors(cfg: ModelConfig, kind: LayerKind) -> tuple[TensorDecl, ...]:
    """One decoder layer of `kind`, names relative to `model.layers.{i}.`; routed experts stacked."""
    hidden = cfg.hidden_size
    return (
        TensorDecl("input_layernorm.weight", (hidden,), "norm"),
        *under(attention_tensors(cfg), "self_attn."),
        TensorDecl("post_attention_layernorm.weight", (hidden,), "norm"),
        *under(mlp_tensors(cfg, kind), "mlp."),
    )


def mtp_extra_tensors(cfg: ModelConfig) -> tuple[TensorDecl, ...]:
    """What an MTP layer holds besides its decoder layer, relative to `model.layers.{i}.`."""
    hidden, vocab = cfg.hidden_size, cfg.vocab_size
    return (
        TensorDecl("embed_tokens.weight", (vocab, hidden), "embedding", at.EMBEDDING, mtp=True),
        TensorDecl("enorm.weight", (hidden,), "norm", mtp=True),
        TensorDecl("hnorm.weight", (hidden,), "norm", mtp=True),
        TensorDecl("eh_proj.weight", (hidden, 2 * hidden), "mtp_projection", mtp=True),
        TensorDecl("shared_head.norm.weight", (hidden,), "norm", mtp=True),
        TensorDecl("shared_head.head.weight", (vocab, hidden), "lm_head", at.LM_HEAD, mtp=True),
    )


def outer_tensors(cfg: ModelConfig) -> tuple[TensorDecl, ...]:
    """The embedding, final norm and lm_head (the last absent when tied to the embedding)."""
    hidden, vocab = cfg.hidden_size, cfg.vocab_size
    out = [
        TensorDecl("model.embed_tokens.weight", (vocab, hidden), "embedding", at.EMBEDDING),
        TensorDecl("model.norm.weight", (hidden,), "norm"),
    ]
    if not cfg.tie_word_embeddings:
        out.append(TensorDecl("lm_head.weight", (vocab, hidden), "lm_head", at.LM_HEAD))
    return tuple(out)


def _layer(cfg: ModelConfig, index: int) -> Iterator[TensorDecl]:
    mtp = index >= cfg.num_hidden_layers
    prefix = f"model.layers.{index}."
    if mtp:
        yield from (decl.under(prefix) for decl in mtp_extra_tensors(cfg))
    yield from (decl.under(prefix, mtp=mtp) for decl in decoder_layer_tensors(cfg, cfg.layer_kind(index)))


def model_tensors(cfg: ModelConfig, *, include_mtp: bool = True, stacked: bool = False) -> dict[str, TensorDecl]:
    """Every tensor of the model by full name, in checkpoint order. `stacked=False` (the checkpoint's
    layout): routed experts one tensor per expert and projection; `stacked=True`: our module's stacks."""
    layers = cfg.num_hidden_layers + (cfg.num_nextn_predict_layers if include_mtp else 0)
    embed, norm, *head = outer_tensors(cfg)
    decls = [embed]
    for index in range(layers):
        decls += _layer(cfg, index)
        if index == cfg.num_hidden_layers - 1:
            decls += [norm, *head]
    return {decl.name: decl for decl in (decls if stacked else unstacked(decls))}

"""How `DeepseekForCausalLM` builds the parts a backend may replace: every projection of the decoder
layers and the routed experts, chosen by the module's prefix in the state dict, and the `lm_head`.

Why a prefix: dsv3-mla's and dsv3-moe's linear factories see a projection's local name (`q_a_proj`),
which is the same in every layer, while what replaces a part can depend on the layer, e.g. FP8 weights
kept resident only where the checkpoint stores a `weight_scale_inv` (`dsv3_model.fp8_resident`). The
model asks `parts.linear_factory("model.layers.3.self_attn.")` for each module and passes the result
into the math packages' own factory seam; the math never changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dsv3_config import ModelConfig
from dsv3_moe import GroupedExperts, LinearFactory

LinearAt = Callable[[str, str, int, int, bool], nn.Module]  # (prefix, name, in_features, out_features, bias)
ExpertsAt = Callable[[str, ModelConfig], nn.Module]  # (prefix of the MoE block, config) -> routed experts
LmHeadFor = Callable[[ModelConfig], nn.Module]  # config -> the untied lm_head, [vocab, hidden]


def plain_linear(prefix: str, name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
    """`nn.Linear`, as both math packages' default factories build it."""
    return nn.Linear(in_features, out_features, bias=bias)


def plain_experts(prefix: str, cfg: ModelConfig) -> nn.Module:
    """dsv3-moe's stacked `GroupedExperts`, all experts on one device."""
    return GroupedExperts(cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size)


def plain_lm_head(cfg: ModelConfig) -> nn.Module:
    """`nn.Linear(hidden_size, vocab_size, bias=False)`."""
    return nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)


@dataclass(frozen=True)
class ModelParts:
    """The builders `DeepseekForCausalLM` uses; the defaults give the plain model. (A `lm_head` tied to the
    embedding is always the plain one, sharing the embedding's weight.)"""

    linear: LinearAt = plain_linear
    experts: ExpertsAt = plain_experts
    lm_head: LmHeadFor = plain_lm_head

    def linear_factory(self, prefix: str) -> LinearFactory:
        """The math packages' `factory(name, in_features, out_features, bias)` for the module at `prefix`."""
        return functools.partial(self.linear, prefix)


PLAIN_PARTS = ModelParts()

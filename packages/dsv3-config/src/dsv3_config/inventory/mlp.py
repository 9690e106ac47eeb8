"""The tensors of the MLP module (`mlp.`): a SwiGLU MLP (dense layers, shared experts) or the DeepSeekMoE
block (router `gate`, stacked routed `experts`, optional `shared_experts`).

The routed experts are declared as dsv3-moe (and transformers 5.x in memory) hold them, stacked:
`experts.gate_up_proj` [E, 2I, H] (gate rows, then up rows) and `experts.down_proj` [E, H, I], each with
the per-expert checkpoint tensors it is stacked from (`experts.{e}.gate_proj.weight` [I, H], ...).
The router weight is BF16 in the checkpoint, the `noaux_tc` correction bias fp32; neither is FP8.
"""

from __future__ import annotations

from dsv3_config.inventory import placements as at
from dsv3_config.inventory.records import ExpertStack, Family, TensorDecl
from dsv3_config.model_config import LayerKind, ModelConfig


def swiglu_tensors(hidden: int, intermediate: int, family: Family) -> tuple[TensorDecl, ...]:
    shapes = {
        "gate_proj": (intermediate, hidden),
        "up_proj": (intermediate, hidden),
        "down_proj": (hidden, intermediate),
    }
    return tuple(TensorDecl(f"{proj}.weight", shape, family, at.SWIGLU[proj], True) for proj, shape in shapes.items())


def expert_stacks(cfg: ModelConfig) -> tuple[TensorDecl, ...]:
    """The two stacked routed-expert tensors, names relative to the MoE module."""
    experts, hidden, inter = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
    gate_up = ExpertStack(("experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight"), experts, concat_dim=0)
    down = ExpertStack(("experts.{e}.down_proj.weight",), experts, concat_dim=0)
    return (
        TensorDecl(
            "experts.gate_up_proj",
            (experts, 2 * inter, hidden),
            "experts",
            at.EXPERTS_GATE_UP,
            True,
            stacked_from=gate_up,
        ),
        TensorDecl("experts.down_proj", (experts, hidden, inter), "experts", at.EXPERTS_DOWN, True, stacked_from=down),
    )


def moe_tensors(cfg: ModelConfig) -> tuple[TensorDecl, ...]:
    experts, hidden = cfg.n_routed_experts, cfg.hidden_size
    out = [TensorDecl("gate.weight", (experts, hidden), "router", at.ROUTER)]
    if cfg.topk_method == "noaux_tc":
        out.append(TensorDecl("gate.e_score_correction_bias", (experts,), "router", dtype="float32"))
    out += expert_stacks(cfg)
    if cfg.n_shared_experts:
        shared = swiglu_tensors(hidden, cfg.moe_intermediate_size * cfg.n_shared_experts, "shared_experts")
        out += [decl.under("shared_experts.") for decl in shared]
    return tuple(out)


def mlp_tensors(cfg: ModelConfig, kind: LayerKind) -> tuple[TensorDecl, ...]:
    """The `mlp.` module of a decoder layer of `kind`."""
    if kind is LayerKind.MOE:
        return moe_tensors(cfg)
    return swiglu_tensors(cfg.hidden_size, cfg.intermediate_size, "dense_mlp")

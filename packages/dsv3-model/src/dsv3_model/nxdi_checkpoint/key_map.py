"""The tensors `NeuronDsv3Model` loads, as a view of the inventory (`dsv3_config.inventory`): our model's
tensors under NxDI's names, with only NxD's renames kept as data.

After NxDI strips the leading `model.`, attention, norms, embeddings, `lm_head`, dense MLPs and shared
experts keep HF's names. MoE layers follow NxDI's `initialize_moe_module` layout (docs/nxdi-contract.md
section 8): the router `mlp.gate.*` becomes `mlp.router.linear_router.weight` /
`mlp.router.e_score_correction_bias`, and the routed-expert stacks are NxD's transposes of ours:
`gate_up_proj` [E, H, 2I] (gate in `[..., :I]`) and `down_proj` [E, I, H]. MTP layers are not part of the
causal LM NxDI serves. Shapes are the inventory's; placements are the layer packages' plans
(`mla_shard_plan`, `moe_shard_plan`, `mlp_shard_plan`) and the inventory's for the embedding, norms and
lm_head, permuted with the stacks (a split of our dim d is a split of NxD's dim `permutation.index(d)`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dsv3_config import LayerKind, ModelConfig, Placement, ShardPlan
from dsv3_config.inventory import TensorDecl, model_tensors
from dsv3_mla import mla_shard_plan
from dsv3_moe import mlp_shard_plan, moe_shard_plan

HF_MODEL_PREFIX = "model."
EXPERTS = "mlp.expert_mlps.mlp_op"
TRANSPOSED = (0, 2, 1)  # NxD's expert stacks: ours with the last two dims swapped
# our name relative to a decoder layer -> (NxDI's name, the dim order NxD stores it in; None: ours)
RENAMES: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "mlp.gate.weight": ("mlp.router.linear_router.weight", None),
    "mlp.gate.e_score_correction_bias": ("mlp.router.e_score_correction_bias", None),
    "mlp.experts.gate_up_proj": (f"{EXPERTS}.gate_up_proj.weight", TRANSPOSED),
    "mlp.experts.down_proj": (f"{EXPERTS}.down_proj.weight", TRANSPOSED),
}
EXPERT_STACK_KEYS = tuple(name for name, order in RENAMES.values() if order is not None)


def scale_key(weight_key: str) -> str:
    """The fp32 block-scale grid of an FP8 expert stack or linear: NxD's quantized layers name it `scale`
    (`...proj.scale`)."""
    return weight_key.removesuffix("weight") + "scale"


EXPERT_SCALE_KEYS = tuple(scale_key(name) for name in EXPERT_STACK_KEYS)


@dataclass(frozen=True)
class NxdiTensor:
    """One model tensor under its NxDI key: our declaration (names without `model.`), its placement in our
    dim order, and the dim order NxD stores it in."""

    name: str
    decl: TensorDecl
    our_placement: Placement
    permutation: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        order = self.permutation
        return self.decl.shape if order is None else tuple(self.decl.shape[d] for d in order)

    @property
    def placement(self) -> Placement:
        order = self.permutation
        if order is None:
            return self.our_placement
        return tuple(split.model_copy(update={"dim": order.index(split.dim)}) for split in self.our_placement)


def _without_model_prefix(decl: TensorDecl) -> TensorDecl:
    stack = decl.stacked_from
    if stack is not None:
        stack = replace(stack, sources=tuple(source.removeprefix(HF_MODEL_PREFIX) for source in stack.sources))
    return replace(decl, name=decl.name.removeprefix(HF_MODEL_PREFIX), stacked_from=stack)


def layer_and_local(name: str) -> tuple[int, str]:
    """`layers.3.self_attn.q_a_proj.weight` -> (3, `self_attn.q_a_proj.weight`); outside a layer (-1, name)."""
    parts = name.split(".", 2)
    if parts[0] == "layers" and len(parts) == 3 and parts[1].isdigit():
        return int(parts[1]), parts[2]
    return -1, name


def nxdi_tensors(cfg: ModelConfig) -> list[NxdiTensor]:
    """Every weight `NeuronDsv3Model` loads (the `SPMDRank` vectors aside), in checkpoint order."""
    plans: dict[LayerKind, dict[str, ShardPlan]] = {
        kind: {
            "self_attn.": mla_shard_plan(cfg),
            "mlp.": moe_shard_plan(cfg) if kind is LayerKind.MOE else mlp_shard_plan(),
        }
        for kind in LayerKind
    }
    out = []
    for full in model_tensors(cfg, include_mtp=False, stacked=True).values():
        decl = _without_model_prefix(full)
        layer, local = layer_and_local(decl.name)
        placement = decl.placement
        module = next((m for m in ("self_attn.", "mlp.") if local.startswith(m)), None) if layer >= 0 else None
        if module is not None:
            placement = plans[cfg.layer_kind(layer)][module][local.removeprefix(module)]
        renamed, order = RENAMES.get(local, (local, None))
        out.append(NxdiTensor(decl.name.removesuffix(local) + renamed, decl, placement, order))
    return out

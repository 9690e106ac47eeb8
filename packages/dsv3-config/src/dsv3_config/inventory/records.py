"""The records of the parameter inventory: one `TensorDecl` per tensor a module holds, as frozen data.

A declaration says everything the views need (no torch): the Hugging Face name relative to its module,
the shape as computed from the config, the module family, the placement over the (ep, tp) mesh
(`dsv3_config.Split`s, applied by dsv3-weights), the dtype an unquantized checkpoint stores, whether
DeepSeek's FP8 release stores it as `float8_e4m3fn` with a `weight_scale_inv`, and, for the stacked
routed experts, which per-expert checkpoint tensors it is stacked from (`ExpertStack`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from dsv3_config.shard_plan import REPLICATED, Placement, Split

Family = Literal[
    "latent_projection",  # q_a_proj, kv_a_proj_with_mqa (and their biases): hidden -> latent
    "attention",  # the per-head projections q_proj / q_b_proj, kv_b_proj, o_proj
    "router",  # gate.weight, gate.e_score_correction_bias
    "experts",  # the routed experts
    "shared_experts",
    "dense_mlp",
    "embedding",
    "lm_head",
    "norm",  # RMSNorm weights
    "mtp_projection",  # the MTP layer's eh_proj (2h -> h)
]
StoredDtype = Literal["bfloat16", "float32"]


@dataclass(frozen=True)
class ExpertStack:
    """`stacked = stack([cat([sources[k].format(e=e) for k], dim=concat_dim) for e in range(num_experts)])`.

    `sources` are the per-expert checkpoint names (templates over `{e}`, relative to the same module as
    the stacked tensor); `concat_dim` indexes a per-expert tensor (gate [I, H] | up [I, H] -> [2I, H]).
    """

    sources: tuple[str, ...]
    num_experts: int
    concat_dim: int

    def source_keys(self, expert: int) -> list[str]:
        return [template.format(e=expert) for template in self.sources]

    def all_source_keys(self) -> list[str]:
        return [key for e in range(self.num_experts) for key in self.source_keys(e)]


@dataclass(frozen=True)
class TensorDecl:
    name: str
    shape: tuple[int, ...]
    family: Family
    placement: Placement = REPLICATED
    fp8: bool = False  # stored FP8 with a `weight_scale_inv` in DeepSeek's FP8 release
    dtype: StoredDtype = "bfloat16"  # dtype in a checkpoint of torch_dtype bfloat16, when not FP8
    mtp: bool = False  # part of a multi-token-prediction layer (index >= num_hidden_layers)
    stacked_from: ExpertStack | None = None

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    def under(self, prefix: str, *, mtp: bool | None = None) -> TensorDecl:
        """The same tensor named under `prefix` (e.g. `model.layers.3.self_attn.`), stack sources too."""
        stack = self.stacked_from
        if stack is not None:
            stack = replace(stack, sources=tuple(prefix + source for source in stack.sources))
        return replace(self, name=prefix + self.name, mtp=self.mtp if mtp is None else mtp, stacked_from=stack)


def under(decls: tuple[TensorDecl, ...], prefix: str) -> tuple[TensorDecl, ...]:
    return tuple(decl.under(prefix) for decl in decls)


def _source_template(decl: TensorDecl) -> TensorDecl:
    """One source of a stacked declaration, unnamed: the expert dim dropped, `concat_dim` divided by the
    number of sources; the placement is the stack's with the ep split dropped (experts go whole to an ep
    rank) and the other splits moved one dim down, `parts` undone (each source is one of the parts)."""
    assert decl.stacked_from is not None
    stack = decl.stacked_from
    shape = list(decl.shape[1:])
    shape[stack.concat_dim] //= len(stack.sources)
    placement = tuple(
        Split(dim=split.dim - 1, mesh_axis=split.mesh_axis, unit=split.unit)
        for split in decl.placement
        if split.dim > 0
    )
    return replace(decl, name="", shape=tuple(shape), placement=placement, stacked_from=None)


def per_expert(decl: TensorDecl, expert: int) -> tuple[TensorDecl, ...]:
    """Expert `expert`'s checkpoint tensors a stacked declaration is made of (itself when not stacked)."""
    stack = decl.stacked_from
    if stack is None:
        return (decl,)
    if not 0 <= expert < stack.num_experts:
        raise ValueError(f"{decl.name}: expert {expert} outside 0..{stack.num_experts - 1}")
    template = _source_template(decl)
    return tuple(replace(template, name=name) for name in stack.source_keys(expert))


def unstacked(decls: list[TensorDecl]) -> list[TensorDecl]:
    """`decls` with each run of stacked declarations replaced by its per-expert tensors, expert by
    expert (`experts.0.gate_proj`, `experts.0.up_proj`, `experts.0.down_proj`, `experts.1.gate_proj`, ...),
    the order of DeepSeek's checkpoint index."""
    out: list[TensorDecl] = []
    run: list[tuple[TensorDecl, ExpertStack]] = []
    for decl in [*decls, None]:
        if decl is not None and decl.stacked_from is not None:
            run.append((_source_template(decl), decl.stacked_from))
            continue
        for e in range(run[0][1].num_experts if run else 0):
            for template, stack in run:
                out += [replace(template, name=name) for name in stack.source_keys(e)]
        run = []
        if decl is not None:
            out.append(decl)
    return out

"""The vocabulary of sharding plans, shared by the layer packages that declare them and
dsv3-weights that applies them. Data only: no torch here.

A plan maps a parameter name (Hugging Face's, relative to its module) to a `Placement`: a tuple of
`Split`s, empty for replicated. Example, MLA under tensor parallelism:

    {"q_b_proj.weight": (Split(dim=0, mesh_axis="tp", unit=qk_head_dim),),
     "o_proj.weight":   (Split(dim=1, mesh_axis="tp", unit=v_head_dim),),
     "kv_a_proj_with_mqa.weight": ()}

`unit` keeps whole heads together; `parts` says the dimension is `parts` equal blocks concatenated
(fused gate|up), each split on its own so rank r gets the r-th slice of every block.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

MeshAxis = Literal["tp", "ep"]


class Split(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: NonNegativeInt
    mesh_axis: MeshAxis
    unit: PositiveInt = 1
    parts: PositiveInt = 1


Placement = tuple[Split, ...]
REPLICATED: Placement = ()
ShardPlan = dict[str, Placement]


class MeshCoordinate(BaseModel):
    """One rank's position: its tensor-parallel and expert-parallel index and the group sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp_rank: NonNegativeInt = 0
    tp_size: PositiveInt = 1
    ep_rank: NonNegativeInt = 0
    ep_size: PositiveInt = 1

    def rank_and_size(self, axis: MeshAxis) -> tuple[int, int]:
        return (self.tp_rank, self.tp_size) if axis == "tp" else (self.ep_rank, self.ep_size)


def prefixed(plan: ShardPlan, prefix: str) -> ShardPlan:
    """The same plan with every name under `prefix` (e.g. `model.layers.3.self_attn.`)."""
    return {prefix + name: placement for name, placement in plan.items()}

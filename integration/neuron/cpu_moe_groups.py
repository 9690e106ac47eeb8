"""Test support only: NxD's expert-parallel MoE process groups built for CPU mode (gloo).

On a Neuron host NxD builds each MoE group SPMD-style: one XLA process group per role that carries the
whole replica mesh (`new_group(mesh[0], pg_options={"xla_pg_options": {"mesh": mesh}})`, NxD
`modules/moe/moe_process_group.py:12-47`), and reads the mesh back from the group's `_mesh` attribute
when it places experts (`parallel_state.get_expert_parallel_rank_from_global_rank`, used by the preshard
hook `create_spmd_ranks` and by `shard_children`). NxD's CPU mode has no such path: `new_group(mesh[0])`
under gloo gives ranks outside `mesh[0]` no group at all, and gloo's `ProcessGroup` cannot carry `_mesh`.

`install()` gives CPU mode the same groups: it replaces NxDI's call to
`init_tensor_expert_parallel_moe_process_groups` with one that computes the meshes with NxD's own
`initialize_model_parallel(..., mesh_only=True)` (as the original does), creates a gloo group for every
replica group of each mesh (every rank takes part, as gloo requires) and stores each rank's own group
in NxD's globals; and it answers `get_expert_parallel_rank_from_global_rank` from the recorded meshes
(the original's loop over `group._mesh`). Call it in every rank before the model is built. Nothing here
changes which experts a rank holds or how MoE computes: both stay NxD's code.
"""

from __future__ import annotations

from typing import Any

import torch

_MESHES: dict[Any, list[list[int]]] = {}  # this rank's group -> the mesh it belongs to


def _group_of(mesh: list[list[int]]) -> Any:
    rank = torch.distributed.get_rank()
    mine = None
    for ranks in mesh:
        group = torch.distributed.new_group(ranks, backend="gloo")
        if rank in ranks:
            mine = group
    if mine is None:
        raise ValueError(f"rank {rank} is in no replica group of {mesh}")
    _MESHES[mine] = mesh
    return mine


def expert_parallel_rank_from_global_rank(rank: int, expert_parallel_group: Any) -> int:
    """NxD's `get_expert_parallel_rank_from_global_rank`, reading the mesh recorded for the group."""
    for ranks in _MESHES[expert_parallel_group]:
        if rank in ranks:
            return ranks.index(rank)
    raise ValueError(f"rank: {rank} not found in the mesh: {_MESHES[expert_parallel_group]}")


def init_moe_process_groups(tkg_tp_degree: int, tkg_ep_degree: int, cte_tp_degree: int, cte_ep_degree: int) -> None:
    """NxD's `init_tensor_expert_parallel_moe_process_groups` for gloo (same meshes, same globals)."""
    from neuronx_distributed.modules.moe import moe_process_group as groups
    from neuronx_distributed.parallel_layers.parallel_state import initialize_model_parallel

    lnc_size = 1 if cte_tp_degree * cte_ep_degree <= 32 else 2  # as NxD
    for role, tp_degree, ep_degree in (("TKG", tkg_tp_degree, tkg_ep_degree), ("CTE", cte_tp_degree, cte_ep_degree)):
        tp_name, ep_name = f"_MOE_{role}_TENSOR_MODEL_PARALLEL_GROUP", f"_MOE_{role}_EXPERT_MODEL_PARALLEL_GROUP"
        if getattr(groups, tp_name) is not None or getattr(groups, ep_name) is not None:
            continue
        meshes = initialize_model_parallel(
            tensor_model_parallel_size=tp_degree,
            expert_model_parallel_size=ep_degree,
            mesh_only=True,
            lnc_size=lnc_size,
        )
        setattr(groups, tp_name, _group_of(meshes.tp_groups))
        setattr(groups, ep_name, _group_of(meshes.ep_model_groups))


def install() -> None:
    """Route NxDI's MoE group creation and NxD's expert-rank lookup through the gloo versions above."""
    import neuronx_distributed_inference.modules.moe_v2 as moe_v2
    from neuronx_distributed.parallel_layers import parallel_state

    moe_v2.init_tensor_expert_parallel_moe_process_groups = init_moe_process_groups
    parallel_state.get_expert_parallel_rank_from_global_rank = expert_parallel_rank_from_global_rank


def neuron_options(ep_degree: int, world: int) -> dict[str, int]:
    """NeuronConfig options splitting the routed experts over `ep_degree` groups of `world / ep_degree` ranks
    (none for `ep_degree` 1); installs the gloo groups above when they are needed."""
    if ep_degree == 1:
        return {}
    install()
    return {"moe_ep_degree": ep_degree, "moe_tp_degree": world // ep_degree}

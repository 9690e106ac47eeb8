"""Expert and tensor parallelism in one process: each rank loads the slices `moe_shard_plan` assigns it and
computes a partial output; the sum over all (ep, tp) ranks equals the unsharded output. Shared experts are
tp-sharded and counted on ep rank 0 only (ranks with ep_rank > 0 are built without them, dsv3_moe.moe).

The slicing is a local function on purpose (dsv3-moe must not depend on dsv3-weights).
Tolerance: fp32 1e-5 absolute on O(1) outputs (the sums over ranks reorder fp32 additions: ~1e-7).
"""

from __future__ import annotations

import pytest
import torch
from moe_cases import CONFIGS, build_moe, random_hidden
from torch import nn

from dsv3_config import MeshCoordinate, ModelConfig, Placement
from dsv3_moe import DeepseekMoE, GroupedExperts, GroupLimitedRouter, SwiGLUMLP, moe_shard_plan


def local_slice(tensor: torch.Tensor, placement: Placement, coord: MeshCoordinate) -> torch.Tensor:
    """Rank `coord`'s part: for each split, the rank's chunk of each of the `parts` blocks, concatenated."""
    for split in placement:
        rank, size = coord.rank_and_size(split.mesh_axis)
        blocks = tensor.chunk(split.parts, dim=split.dim)
        tensor = torch.cat([block.chunk(size, dim=split.dim)[rank] for block in blocks], dim=split.dim)
    return tensor


def rank_module(cfg: ModelConfig, full: DeepseekMoE, coord: MeshCoordinate) -> DeepseekMoE:
    plan = moe_shard_plan(cfg)
    with_shared = coord.ep_rank == 0
    full_state = full.state_dict()
    state = {
        name: local_slice(value, plan[name], coord)
        for name, value in full_state.items()
        if with_shared or not name.startswith("shared_experts.")
    }
    # The router weight is split by expert over tp; each rank's logits slice is all-gathered, which in one
    # process is the gate built from every tp rank's rows, in rank order.
    tp_ranks = [coord.model_copy(update={"tp_rank": rank}) for rank in range(coord.tp_size)]
    state["gate.weight"] = torch.cat([local_slice(full_state["gate.weight"], plan["gate.weight"], c) for c in tp_ranks])

    def factory(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        weight = state[f"shared_experts.{name}.weight"]
        return nn.Linear(weight.shape[1], weight.shape[0], bias=bias)

    shared = SwiGLUMLP(cfg.hidden_size, cfg.moe_intermediate_size, linear_factory=factory) if with_shared else None
    experts = GroupedExperts(
        cfg.n_routed_experts,
        cfg.hidden_size,
        cfg.moe_intermediate_size,
        ep_rank=coord.ep_rank,
        ep_size=coord.ep_size,
        tp_size=coord.tp_size,
    )
    module = DeepseekMoE(router=GroupLimitedRouter(cfg), experts=experts, shared_experts=shared)
    module.load_state_dict(state, strict=True)
    return module.eval()


@pytest.mark.parametrize("name", ["tiny", "v2_lite_like"])
def test_plan_covers_exactly_the_state_dict(name: str) -> None:
    cfg = CONFIGS[name]
    assert set(moe_shard_plan(cfg)) == set(build_moe(cfg).state_dict())


@pytest.mark.parametrize(("ep", "tp"), [(2, 1), (4, 1), (1, 2), (2, 2)])
@torch.no_grad()
def test_rank_outputs_sum_to_unsharded(ep: int, tp: int) -> None:
    cfg = CONFIGS["tiny"]
    torch.manual_seed(7)
    full = build_moe(cfg)
    full.gate.e_score_correction_bias.normal_(0.0, 0.1)
    hidden = random_hidden(cfg, seed=8, shape=(3, 9))
    want = full(hidden)
    coords = [MeshCoordinate(ep_rank=e, ep_size=ep, tp_rank=t, tp_size=tp) for e in range(ep) for t in range(tp)]
    partial = [rank_module(cfg, full, coord)(hidden) for coord in coords]
    assert float((partial[-1] - want).abs().max()) > 1e-2  # one rank alone is really partial
    torch.testing.assert_close(sum(partial), want, rtol=0, atol=1e-5)


def test_router_weight_splits_by_expert_over_tp() -> None:
    """Rank r of tp=4 holds experts [4r, 4r + 4) of tiny's 16 router rows; the correction bias is whole."""
    cfg = CONFIGS["tiny"]
    plan = moe_shard_plan(cfg)
    rows_EH = torch.arange(cfg.n_routed_experts, dtype=torch.float32)[:, None].expand(-1, cfg.hidden_size)
    got = local_slice(rows_EH, plan["gate.weight"], MeshCoordinate(tp_rank=1, tp_size=4))
    assert got[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert plan["gate.e_score_correction_bias"] == ()


def test_gate_up_tp_slices_keep_gate_and_up_paired() -> None:
    """parts=2: rank r of tp=2 gets gate rows [r*I/2, (r+1)*I/2) and the same up rows, not half the gates."""
    cfg = CONFIGS["tiny"]
    inter = cfg.moe_intermediate_size
    rows = torch.arange(2 * inter, dtype=torch.float32).view(1, -1, 1).expand(cfg.n_routed_experts, -1, 1)
    got = local_slice(rows, moe_shard_plan(cfg)["experts.gate_up_proj"], MeshCoordinate(tp_rank=1, tp_size=2))
    half = inter // 2
    assert got[0, :, 0].tolist() == [*range(half, inter), *range(inter + half, 2 * inter)]

"""Tensor parallelism by heads, in one process: each rank loads the slices `mla_shard_plan` assigns
it, computes its heads and returns a partial `o_proj` output; the sum over ranks equals the unsharded
output (tp = 1, 2, 4) through prefill and decode, on both paths.

The slicing is a local 10-line function on purpose (dsv3-mla must not depend on dsv3-weights).
"""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS, random_inputs, run_ours
from torch import nn

from dsv3_config import MeshCoordinate, ModelConfig, Placement
from dsv3_mla import MultiHeadLatentAttention, mla_shard_plan


def local_slice(tensor: torch.Tensor, placement: Placement, coord: MeshCoordinate) -> torch.Tensor:
    for split in placement:
        rank, size = coord.rank_and_size(split.mesh_axis)
        if split.parts != 1 or tensor.shape[split.dim] % (size * split.unit):
            raise ValueError(f"cannot split {tuple(tensor.shape)} by {split}")
        tensor = tensor.chunk(size, dim=split.dim)[rank]
    return tensor


def sharded_module(cfg: ModelConfig, full: MultiHeadLatentAttention, coord: MeshCoordinate) -> MultiHeadLatentAttention:
    plan = mla_shard_plan(cfg)
    local_state = {name: local_slice(value, plan[name], coord) for name, value in full.state_dict().items()}

    def factory(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        weight = local_state[f"{name}.weight"]
        return nn.Linear(weight.shape[1], weight.shape[0], bias=bias)

    rank_module = MultiHeadLatentAttention(cfg, linear_factory=factory, tp_size=coord.tp_size)
    rank_module.load_state_dict(local_state, strict=True)
    return rank_module.eval()


def test_plan_covers_exactly_the_state_dict() -> None:
    for cfg in (CONFIGS["tiny"], CONFIGS["q_lora_null"], CONFIGS["tiny"].replace(attention_bias=True)):
        assert set(mla_shard_plan(cfg)) == set(MultiHeadLatentAttention(cfg).state_dict())


@pytest.mark.parametrize("path", ["absorbed", "expanded"])
@pytest.mark.parametrize("name", ["tiny", "q_lora_null"])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_rank_outputs_sum_to_unsharded(tp: int, name: str, path: str) -> None:
    cfg = CONFIGS[name]
    torch.manual_seed(5)
    full = MultiHeadLatentAttention(cfg).eval()
    prompts, decode = random_inputs(cfg, seed=6)
    want_prefill, want_decode, _ = run_ours(full, prompts, decode, path)  # type: ignore[arg-type]
    partial = [
        run_ours(sharded_module(cfg, full, MeshCoordinate(tp_rank=rank, tp_size=tp)), prompts, decode, path)  # type: ignore[arg-type]
        for rank in range(tp)
    ]
    if tp > 1:  # one rank alone is really partial
        assert float((partial[0][1] - want_decode).abs().max()) > 1e-3
    # Summing partial o_proj outputs reorders an fp32 sum over heads: ~1e-7 on O(1) outputs.
    real = [slice(0, 17), slice(0, 11)]
    for row, cols in enumerate(real):
        torch.testing.assert_close(sum(p[0][row, cols] for p in partial), want_prefill[row, cols], rtol=0, atol=1e-5)
    torch.testing.assert_close(sum(p[1] for p in partial), want_decode, rtol=0, atol=1e-5)


def test_tp_must_divide_heads() -> None:
    with pytest.raises(ValueError, match="tp_size"):
        MultiHeadLatentAttention(CONFIGS["tiny"], tp_size=3)

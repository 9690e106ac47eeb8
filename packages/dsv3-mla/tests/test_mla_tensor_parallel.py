"""Tensor parallelism by heads, in one process: each rank loads the slices `mla_shard_plan` assigns
it, computes its heads and returns a partial `o_proj` output; the sum over ranks equals the unsharded
output (tp = 1, 2, 4) through prefill and decode, on both paths.

The latent projections are row-parallel (input columns split): a rank's module for one of them is the
all-reduce written out in one process, the sum over every rank's column slice of `x_slice @ W_slice^T`,
the bias added once (`SummedColumnSlices`), so the slices the plan assigns must recombine exactly.

The slicing is a local 10-line function on purpose (dsv3-mla must not depend on dsv3-weights).
"""

from __future__ import annotations

import pytest
import torch
from mla_cases import CONFIGS, random_inputs, run_ours
from torch import nn

from dsv3_config import MeshCoordinate, ModelConfig, Placement, Split
from dsv3_mla import MultiHeadLatentAttention, mla_shard_plan

LATENTS = ("q_a_proj", "kv_a_proj_with_mqa")


def local_slice(tensor: torch.Tensor, placement: Placement, coord: MeshCoordinate) -> torch.Tensor:
    for split in placement:
        rank, size = coord.rank_and_size(split.mesh_axis)
        if split.parts != 1 or tensor.shape[split.dim] % (size * split.unit):
            raise ValueError(f"cannot split {tuple(tensor.shape)} by {split}")
        tensor = tensor.chunk(size, dim=split.dim)[rank]
    return tensor


class SummedColumnSlices(nn.Module):
    """A row-parallel projection of a replicated input as each rank holds it after the all-reduce: the sum over
    the tp ranks' column slices (`local_slice` of each rank) of `x[..., cols_r] @ W_r^T`, plus the bias once."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, placement: Placement, tp: int) -> None:
        super().__init__()
        self.slices_OI = [local_slice(weight, placement, MeshCoordinate(tp_rank=r, tp_size=tp)) for r in range(tp)]
        self.bias = bias

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        inputs = x_BSD.chunk(len(self.slices_OI), dim=-1)
        out_BSO = sum(nn.functional.linear(x, w) for x, w in zip(inputs, self.slices_OI, strict=True))
        return out_BSO if self.bias is None else out_BSO + self.bias


def sharded_module(cfg: ModelConfig, full: MultiHeadLatentAttention, coord: MeshCoordinate) -> MultiHeadLatentAttention:
    plan = mla_shard_plan(cfg)
    full_state = full.state_dict()
    local_state = {name: local_slice(value, plan[name], coord) for name, value in full_state.items()}
    if coord.tp_rank > 0 and "o_proj.bias" in local_state:  # a row-parallel bias is added once, after the sum
        local_state["o_proj.bias"] = torch.zeros_like(local_state["o_proj.bias"])
    row_split_latents = [name for name in LATENTS if plan.get(f"{name}.weight") == (Split(dim=1, mesh_axis="tp"),)]

    def factory(name: str, in_features: int, out_features: int, bias: bool) -> nn.Module:
        if name in row_split_latents:
            weight = full_state[f"{name}.weight"]
            return SummedColumnSlices(weight, full_state.get(f"{name}.bias"), plan[f"{name}.weight"], coord.tp_size)
        weight = local_state[f"{name}.weight"]
        return nn.Linear(weight.shape[1], weight.shape[0], bias=bias)

    rank_module = MultiHeadLatentAttention(cfg, linear_factory=factory, tp_size=coord.tp_size)
    latent_keys = {f"{name}.{p}" for name in row_split_latents for p in ("weight", "bias")}
    rank_module.load_state_dict({k: v for k, v in local_state.items() if k not in latent_keys}, strict=True)
    return rank_module.eval()


def test_latent_projections_split_their_input_columns() -> None:
    """q_a_proj and kv_a_proj_with_mqa are row-parallel over tp; their biases and norms replicated."""
    cfg = CONFIGS["tiny"].replace(attention_bias=True)
    plan = mla_shard_plan(cfg)
    assert [plan[f"{name}.weight"] for name in LATENTS] == [(Split(dim=1, mesh_axis="tp"),)] * 2
    assert [plan[f"{name}.bias"] for name in LATENTS] == [(), ()]
    assert plan["q_a_layernorm.weight"] == plan["kv_a_layernorm.weight"] == ()


def test_plan_covers_exactly_the_state_dict() -> None:
    for cfg in (CONFIGS["tiny"], CONFIGS["q_lora_null"], CONFIGS["tiny"].replace(attention_bias=True)):
        assert set(mla_shard_plan(cfg)) == set(MultiHeadLatentAttention(cfg).state_dict())


@pytest.mark.parametrize("path", ["absorbed", "expanded"])
@pytest.mark.parametrize("name", ["tiny", "q_lora_null", "attention_bias"])
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

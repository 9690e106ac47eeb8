"""`dsv3 shard --weights fp8`: the other FP8 linears in the per-rank files, without NxD/NxDI installed.

By hand from the source checkpoint's own tensors: each linear the adapter holds FP8 (`q_a_proj`, `q_b_proj`,
`kv_a_proj_with_mqa`, `o_proj`, the dense MLP and the shared experts, named here, not read from the record) is
its stored FP8 values halved (`float8_e4m3fn` bits of q / 2), cut to the rank's rows (column-parallel) or columns
(row-parallel and the latent projections), and its `scale` is the checkpoint's `weight_scale_inv` expanded to one
value per element, sampled once per device block (gcd of the 32-element block and the rank's slice), doubled, cut
the same way. Every other key must equal, bit for bit, the `--weights fp8-experts` files of the same job (the
conversion of everything else does not change), and those hold no key the fp8 files lack. Exact equality.
Also the in-memory conversion (NxDI's path) gives the same whole tensors, and the dequantized FP8 linears equal
dsv3-weights' dequantization of the checkpoint within the rescaling bound (2^-9 of each block's scale).
Agreement with NxD's own `shard_checkpoint` is checked in integration/neuron (needs NxD).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsv3_config import preset
from dsv3_config.inventory.fp8_experts import fp8_expert_grid
from dsv3_model.cli.main import main
from dsv3_model.nxdi_checkpoint.neuron_tensors import NeuronTarget
from dsv3_model.nxdi_checkpoint.state_dict import convert_state_dict
from dsv3_weights import CheckpointReader, dequantize_fp8_blocks, make_checkpoint

BLOCK = 32  # tiny's FP8 block
# The linears held FP8 by key ending, and the dim tp splits (0: output rows, 1: input columns)
FP8_LINEARS = {
    "self_attn.q_a_proj.weight": 1,
    "self_attn.q_b_proj.weight": 0,
    "self_attn.kv_a_proj_with_mqa.weight": 1,
    "self_attn.o_proj.weight": 1,
    "mlp.gate_proj.weight": 0,
    "mlp.up_proj.weight": 0,
    "mlp.down_proj.weight": 1,
    "shared_experts.gate_proj.weight": 0,
    "shared_experts.up_proj.weight": 0,
    "shared_experts.down_proj.weight": 1,
}


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("fp8"), preset("tiny"), fp8=True, seed=3, progress=False)


def _shard(src: Path, dst: Path, tp: int, ep: int, weights: str) -> list[dict[str, torch.Tensor]]:
    command = ["shard", str(src), str(dst), "--tp", str(tp), "--ep", str(ep), "--dtype", "bf16"]
    assert main([*command, "--weights", weights]) == 0
    return [load_file(str(dst / "weights" / f"tp{r}_sharded_checkpoint.safetensors")) for r in range(tp)]


def _split_dim(key: str) -> int | None:
    return next((dim for ending, dim in FP8_LINEARS.items() if key.endswith(ending)), None)


def _by_hand(raw: torch.Tensor, scale_inv: torch.Tensor, split: int, rank: int, tp: int) -> dict[str, torch.Tensor]:
    """Rank `rank`'s FP8 weight and scale slice of one linear (module docstring)."""
    out, cols = raw.shape
    grid = scale_inv.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:out, :cols]
    width = raw.shape[split] // tp
    weight, grid = raw.narrow(split, rank * width, width), grid.narrow(split, rank * width, width)
    rows, columns = math.gcd(BLOCK, weight.shape[0]), math.gcd(BLOCK, weight.shape[1])
    return {"weight": (weight.float() / 2).to(torch.float8_e4m3fn), "scale": grid[::rows, ::columns] * 2}


@pytest.mark.parametrize(("tp", "ep"), [(2, 1), (4, 2)])
def test_fp8_rank_files_by_hand(tp: int, ep: int, fp8_checkpoint: Path, tmp_path: Path) -> None:
    fp8 = _shard(fp8_checkpoint, tmp_path / "fp8", tp, ep, "fp8")
    experts = _shard(fp8_checkpoint, tmp_path / "experts", tp, ep, "fp8-experts")
    with CheckpointReader(fp8_checkpoint) as reader:
        raw = {key.removeprefix("model."): reader.get(key) for key in reader}
    for rank in range(tp):
        linears = {key for key in fp8[rank] if _split_dim(key.rsplit(".", 1)[0] + ".weight") is not None}
        assert len(linears) == 2 * (4 * 3 + 3 * 1 + 3 * 2), rank  # (weight, scale): attention, dense MLP, shared
        assert set(fp8[rank]) - linears == set(experts[rank]) - linears
        for key in set(experts[rank]) - linears:
            assert torch.equal(fp8[rank][key].view(torch.uint8), experts[rank][key].view(torch.uint8)), key
        for key in (name for name in linears if name.endswith("weight")):
            expected = _by_hand(raw[key], raw[key + "_scale_inv"], _split_dim(key), rank, tp)  # type: ignore[arg-type]
            assert torch.equal(fp8[rank][key].view(torch.uint8), expected["weight"].view(torch.uint8)), (rank, key)
            scale = fp8[rank][key.removesuffix("weight") + "scale"]
            assert scale.dtype == torch.float32, (rank, key)
            assert torch.equal(scale, expected["scale"]), (rank, key)


def test_in_memory_conversion_dequantizes_to_the_checkpoint(fp8_checkpoint: Path) -> None:
    """NxDI's path: `convert_state_dict` for weights fp8 at tp=2; each FP8 linear dequantized as NxD does
    (`q * scale`, each scale repeated over its block) is dsv3-weights' `dequantize_fp8_blocks` of the checkpoint,
    within 2^-9 x the block's `weight_scale_inv` (the halving's bound, `nxdi_checkpoint/fp8_experts.py`)."""
    cfg = preset("tiny")
    with CheckpointReader(fp8_checkpoint) as reader:
        state = {key.removeprefix("model."): reader.get(key) for key in reader}
    raw = dict(state)
    converted = convert_state_dict(state, cfg, NeuronTarget(torch.bfloat16, 2, 2, 1, fp8_expert_grid(cfg, 2), True))
    checked = 0
    for key, tensor in converted.items():
        if tensor.dtype != torch.float8_e4m3fn or ".expert_mlps." in key:
            continue
        scale = converted[key.removesuffix("weight") + "scale"]
        rows, cols = tensor.shape[0] // scale.shape[0], tensor.shape[1] // scale.shape[1]
        ours = tensor.float() * scale.repeat_interleave(rows, 0).repeat_interleave(cols, 1)
        reference = dequantize_fp8_blocks(raw[key], raw[key + "_scale_inv"], (BLOCK, BLOCK), torch.float32)
        bound = raw[key + "_scale_inv"].repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
        bound = bound[: tensor.shape[0], : tensor.shape[1]] * 2**-9 * (1 + 2**-16)  # a tie lands on it, +- rounding
        assert bool(((ours - reference).abs() <= bound).all()), key
        checked += 1
    assert checked == 4 * 3 + 3 * 1 + 3 * 2

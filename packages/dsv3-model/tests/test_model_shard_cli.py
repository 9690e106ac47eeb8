"""`dsv3 shard`: NxDI per-rank files from an FP8 checkpoint, without NxD/NxDI installed.

The reference is computed here by hand from the source checkpoint's own tensors (its key list and each rank's slice
too, not taken from the code under test): each FP8 weight dequantized whole (`dequantize_fp8_blocks`), the router
renamed, experts stacked as NxD's `gate_up_proj` [E, H, 2I] = cat(gate.T, up.T) and `down_proj` [E, I, H] = down.T,
rank vectors arange, and under expert parallelism each rank's `local_expert_indices` row. With FP8 experts (the
default for this checkpoint) the stacks are instead the stored FP8 values halved (the `float8_e4m3fn` bits of q / 2)
and each is joined by its `scale` grid: the checkpoint's `weight_scale_inv` expanded to one value per element,
transposed and stacked like the weights, sampled once per device block (gcd of the 32-row block and each rank's
columns), doubled. It must equal what the in-memory `convert_state_dict` (NxDI's path) returns, and each rank file
must hold, bit for bit, the slice of it written out by hand here (tp and tp x ep layouts). Exact equality: both
sides round the same fp32 products once into the output dtype. Agreement with NxD's own `shard_checkpoint` is
checked in integration/neuron (needs NxD).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsv3_config import ModelConfig, preset
from dsv3_config.inventory.fp8_experts import fp8_expert_grid
from dsv3_model.cli.main import main
from dsv3_model.nxdi_checkpoint import per_rank_files
from dsv3_model.nxdi_checkpoint.neuron_tensors import NeuronTarget, expected_keys
from dsv3_model.nxdi_checkpoint.state_dict import convert_state_dict
from dsv3_weights import CheckpointReader, dequantize_fp8_blocks, make_checkpoint

TP = 2
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("fp8"), preset("tiny"), fp8=True, seed=3, progress=False)


def _hf_tensors(src: Path, dtype: torch.dtype, raw_experts: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, `model.` stripped, FP8 weights dequantized whole into `dtype` (with
    `raw_experts`, routed experts as stored: FP8 weights and their `weight_scale_inv`)."""
    with CheckpointReader(src) as reader:
        block = reader.config().quantization_config.weight_block_size  # type: ignore[union-attr]
        out = {}
        for key in reader:
            raw = raw_experts and ".mlp.experts." in key
            if key.endswith("_scale_inv") and not raw:
                continue
            tensor = reader.get(key)
            if key + "_scale_inv" in reader and not raw:
                tensor = dequantize_fp8_blocks(tensor, reader.get(key + "_scale_inv"), block, dtype)
            out[key.removeprefix("model.")] = tensor
    return out


BLOCK = 32  # tiny's FP8 block (rows and columns)


def _scale_grid(scale_inv: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A `weight_scale_inv` grid as one value per element of its [out, in] matrix (edge blocks cropped)."""
    return scale_inv.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[: shape[0], : shape[1]]


def _fp8_stacks(
    cfg: ModelConfig, raw: dict[str, torch.Tensor], experts: list[str], moe_tp: int
) -> dict[str, torch.Tensor]:
    """One layer's FP8 stacks and scale grids by hand (see the module docstring), keyed like `STACKS`."""
    out = {}
    per_rank = cfg.moe_intermediate_size // moe_tp
    for stack, sources, blocks in (
        (GATE_UP, ("gate_proj", "up_proj"), (math.gcd(BLOCK, cfg.hidden_size), math.gcd(BLOCK, per_rank))),
        (DOWN, ("down_proj",), (math.gcd(BLOCK, per_rank), math.gcd(BLOCK, cfg.hidden_size))),
    ):
        weights, scales = [], []
        for p in experts:
            mats = [raw[f"{p}{s}.weight"] for s in sources]
            weights.append(torch.cat([(m.float() / 2).to(torch.float8_e4m3fn).T for m in mats], 1))
            grids = [
                _scale_grid(raw[f"{p}{s}.weight_scale_inv"], tuple(m.shape))
                for s, m in zip(sources, mats, strict=False)
            ]
            scales.append(torch.cat([g.T for g in grids], 1)[:: blocks[0], :: blocks[1]] * 2)
        out[stack], out[stack.removesuffix("weight") + "scale"] = torch.stack(weights), torch.stack(scales)
    return out


# NxDI's names for the router (docs/nxdi-contract.md section 8), written out here.
ROUTER_NAMES = {
    "mlp.gate.weight": "mlp.router.linear_router.weight",
    "mlp.gate.e_score_correction_bias": "mlp.router.e_score_correction_bias",
}
GATE_UP, DOWN = "mlp.expert_mlps.mlp_op.gate_up_proj.weight", "mlp.expert_mlps.mlp_op.down_proj.weight"
STACKS = (GATE_UP, DOWN, GATE_UP.removesuffix("weight") + "scale", DOWN.removesuffix("weight") + "scale")
# The tp split dim of each non-expert tensor by its name's ending, by hand: heads split the query and kv_b
# rows and the o_proj columns; column-parallel gate/up, row-parallel down; the embedding across hidden
# (`shard_across_embedding`), lm_head across the vocab; the rank vectors one entry (or row) per rank; the
# latent projections q_a_proj and kv_a_proj_with_mqa row-parallel (their input columns, hidden); the router
# weight by expert (its rows). Everything else (norms, biases, the correction bias) is whole on every rank.
SPLIT_DIM = {
    "q_a_proj.weight": 1,
    "kv_a_proj_with_mqa.weight": 1,
    "mlp.router.linear_router.weight": 0,
    "q_b_proj.weight": 0,
    "q_proj.weight": 0,
    "kv_b_proj.weight": 0,
    "o_proj.weight": 1,
    "gate_proj.weight": 0,
    "up_proj.weight": 0,
    "down_proj.weight": 1,
    "embed_tokens.weight": 1,
    "lm_head.weight": 0,
    "rank_util.rank": 0,
    "spmd_rank.rank": 0,
    "spmd_rank.local_expert_indices": 0,
}


def _reference(
    cfg: ModelConfig, hf: dict[str, torch.Tensor], dtype: torch.dtype, tp: int, ep: int, fp8: bool
) -> dict[str, torch.Tensor]:
    """The converted checkpoint, by hand from the HF tensors (see the module docstring): every non-MTP HF
    tensor under its own name or the router's NxDI name, each MoE layer's experts stacked (FP8 ones with
    their scale grids), the rank vectors."""
    ref: dict[str, torch.Tensor] = {"rank_util.rank": torch.arange(tp, dtype=torch.int32)}  # world size == tp
    per_rank = cfg.n_routed_experts // ep
    for key, tensor in hf.items():
        layer = key.split(".")[1] if key.startswith("layers.") else None
        if (layer is not None and int(layer) >= cfg.num_hidden_layers) or ".mlp.experts." in key:
            continue  # MTP layer; routed experts are stacked below
        local = key.removeprefix(f"layers.{layer}.") if layer is not None else key
        ref[key.removesuffix(local) + ROUTER_NAMES.get(local, local)] = tensor
    for layer in range(cfg.first_k_dense_replace, cfg.num_hidden_layers):
        experts = [f"layers.{layer}.mlp.experts.{e}." for e in range(cfg.n_routed_experts)]
        prefix = f"layers.{layer}."
        if fp8:
            ref.update({prefix + key: t for key, t in _fp8_stacks(cfg, hf, experts, tp // ep).items()})
        else:
            ref[prefix + GATE_UP] = torch.stack(
                [torch.cat([hf[f"{p}gate_proj.weight"].T, hf[f"{p}up_proj.weight"].T], 1) for p in experts]
            )
            ref[prefix + DOWN] = torch.stack([hf[f"{p}down_proj.weight"].T for p in experts])
        ref[prefix + "mlp.expert_mlps.spmd_rank.rank"] = torch.arange(tp, dtype=torch.int32)
        if ep > 1:  # ranks r*tp/ep .. hold expert block r
            blocks = [[b * per_rank + j for j in range(per_rank)] for b in range(ep)]
            rows = [blocks[rank // (tp // ep)] for rank in range(tp)]
            ref[prefix + "mlp.expert_mlps.spmd_rank.local_expert_indices"] = torch.tensor(rows, dtype=torch.int32)
    kept = {torch.float8_e4m3fn, torch.float32} if fp8 else set()  # FP8 stacks and their fp32 scales
    return {
        key: t.to(dtype) if t.is_floating_point() and not (".expert_mlps." in key and t.dtype in kept) else t
        for key, t in ref.items()
    }


def _rank_piece(key: str, full: torch.Tensor, rank: int, tp: int, ep: int) -> torch.Tensor:
    """What rank `rank` must hold of `full`, by hand: expert stacks keep expert block `rank // (tp/ep)` and
    intermediate slice `rank % (tp/ep)` (of gate and of up); other tensors the rank-th slice along
    `SPLIT_DIM`, or all of it."""
    moe_tp = tp // ep
    if key.endswith(STACKS):
        per_rank = full.shape[0] // ep
        block = full.narrow(0, rank // moe_tp * per_rank, per_rank)
        dim, parts = (2, 2) if key.endswith(STACKS[::2]) else (1, 1)
        part = block.shape[dim] // parts
        width = part // moe_tp
        return torch.cat([block.narrow(dim, p * part + rank % moe_tp * width, width) for p in range(parts)], dim)
    dim = next((d for ending, d in SPLIT_DIM.items() if key.endswith(ending)), None)
    if dim is None:
        return full
    width = full.shape[dim] // tp
    return full.narrow(dim, rank * width, width)


LAYOUTS = [("fp32", 2, 1), ("bf16", 2, 1), ("bf16", 2, 2), ("fp32", 4, 2)]
CASES = [(*layout, experts) for experts in ("bf16", "fp8-experts") for layout in LAYOUTS]


@pytest.mark.parametrize(("dtype", "tp", "ep", "experts"), CASES)
def test_rank_files_hold_their_slices_of_the_converted_checkpoint(
    dtype: str, tp: int, ep: int, experts: str, fp8_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(per_rank_files, "CHUNK_BYTES", 1024)  # many row chunks per tensor, one expert at a time
    cfg = preset("tiny")
    fp8 = experts == "fp8-experts"
    command = ["shard", str(fp8_checkpoint), str(tmp_path), "--tp", str(tp), "--ep", str(ep), "--dtype", dtype]
    assert main([*command, *([] if fp8 else ["--expert-weights", "bf16"])]) == 0  # FP8 experts: the default
    names = sorted(p.name for p in (tmp_path / "weights").glob("*.safetensors"))
    assert names == sorted(f"tp{r}_sharded_checkpoint.safetensors" for r in range(tp))
    hf = _hf_tensors(fp8_checkpoint, DTYPES[dtype], raw_experts=fp8)
    reference = _reference(cfg, hf, DTYPES[dtype], tp, ep, fp8)
    grid = fp8_expert_grid(cfg, tp // ep) if fp8 else None
    assert sorted(expected_keys(cfg, ep, grid)) == sorted(reference)
    in_memory = convert_state_dict(dict(hf), cfg, NeuronTarget(DTYPES[dtype], tp, tp, ep, grid))
    assert set(in_memory) == set(reference)
    for key, full in reference.items():
        assert in_memory[key].dtype == full.dtype, key
        assert torch.equal(in_memory[key].view(torch.uint8), full.view(torch.uint8)), key
    for rank in range(tp):
        tensors = load_file(str(tmp_path / "weights" / f"tp{rank}_sharded_checkpoint.safetensors"))
        assert set(tensors) == set(reference), rank
        for key, full in reference.items():
            expected = _rank_piece(key, full, rank, tp, ep)
            assert tensors[key].dtype == expected.dtype, key
            assert torch.equal(tensors[key].view(torch.uint8), expected.view(torch.uint8)), (rank, key)
    # tiny: 16 experts, I = 48 (FP8 blocks of 32 rows). tp=2 cuts I inside a block (partial-block dequantization);
    # ep=2 keeps 8 experts per rank.
    gate_up_shape = tensors[f"layers.1.{GATE_UP}"].shape
    assert gate_up_shape == (16 // ep, 64, 2 * 48 // (tp // ep))


def test_a_failed_run_leaves_no_complete_looking_file(
    fp8_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error while writing rank 1: rank 0's finished file stays, rank 1 has neither file nor `.tmp`;
    the rerun keeps rank 0 and equals an uninterrupted run. A `weights/` holding an earlier run's file
    without this job's manifest is refused and left as it is (no mix of runs)."""
    calls = {"n": 0}
    real = CheckpointReader.get_rows

    def failing_get_rows(self: CheckpointReader, name: str, start: int, end: int) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > limit:
            raise OSError("injected read error")
        return real(self, name, start, end)

    limit = 10**9
    monkeypatch.setattr(CheckpointReader, "get_rows", failing_get_rows)
    per_rank_files.write_per_rank_files(fp8_checkpoint, tmp_path / "full", tp_degree=TP)
    limit = calls["n"] * 3 // 4  # a point inside rank 1's file
    calls["n"] = 0
    weights = tmp_path / "partial" / "weights"
    with pytest.raises(OSError, match="injected"):
        per_rank_files.write_per_rank_files(fp8_checkpoint, tmp_path / "partial", tp_degree=TP)
    assert sorted(p.name for p in weights.glob("*.safetensors*")) == ["tp0_sharded_checkpoint.safetensors"]
    finished = load_file(str(tmp_path / "full" / "weights" / "tp0_sharded_checkpoint.safetensors"))
    kept = load_file(str(weights / "tp0_sharded_checkpoint.safetensors"))
    assert finished.keys() == kept.keys()
    assert all(torch.equal(finished[key], kept[key]) for key in finished)
    limit = 10**9
    per_rank_files.write_per_rank_files(fp8_checkpoint, tmp_path / "partial", tp_degree=TP)
    for rank in range(TP):
        name = f"tp{rank}_sharded_checkpoint.safetensors"
        assert (weights / name).read_bytes() == (tmp_path / "full" / "weights" / name).read_bytes()
    other = tmp_path / "other" / "weights"
    other.mkdir(parents=True)
    (other / "tp1_sharded_checkpoint.safetensors").write_bytes(b"an earlier run's file")
    with pytest.raises(FileExistsError, match="not empty and not a shard in progress"):
        per_rank_files.write_per_rank_files(fp8_checkpoint, tmp_path / "other", tp_degree=TP)
    assert [p.name for p in other.iterdir()] == ["tp1_sharded_checkpoint.safetensors"]


def test_bad_requests_fail_with_a_message(
    fp8_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "2", "--ep", "4"]) == 2  # usage errors
    assert "--ep 4 must divide --tp 2" in capsys.readouterr().err
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "32", "--ep", "32"]) == 2  # 16 experts
    assert "ep_degree=32 does not divide n_routed_experts=16" in capsys.readouterr().err
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "3"]) == 2  # 4 heads are not 3 slices
    assert "cannot be cut into 3 tp slices" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").iterdir())


def test_summary_counts_the_bytes_read_and_written(fp8_checkpoint: Path, tmp_path: Path) -> None:
    """Written = the rank files' sizes; read = the checkpoint slices the ranks needed: at most once per rank
    (a column split reads its rows whole), and with ep 2 less than with ep 1, since each expert's down_proj
    (split by columns under tp) is read by one rank only."""
    source_bytes = sum(path.stat().st_size for path in fp8_checkpoint.glob("*.safetensors"))
    read = {}
    for ep in (1, 2):
        summary = per_rank_files.write_per_rank_files(fp8_checkpoint, tmp_path / str(ep), tp_degree=TP, ep_degree=ep)
        files = (tmp_path / str(ep) / "weights").glob("*.safetensors")
        assert summary.bytes_out == sum(path.stat().st_size for path in files)
        assert 0 < summary.bytes_in <= TP * source_bytes
        read[ep] = summary.bytes_in
    assert read[2] < read[1]

"""`dsv3 shard`: NxDI per-rank files from an FP8 checkpoint, without NxD/NxDI installed.

The reference is computed here by hand from the source checkpoint: each FP8 weight dequantized whole
(`dequantize_fp8_blocks`), the router renamed, experts stacked as NxD's `gate_up_proj` [E, H, 2I] =
cat(gate.T, up.T) and `down_proj` [E, I, H] = down.T, rank vectors arange. Re-assembling the rank files
(each split dim: rank pieces concatenated per part) must give it back bit for bit, and equal what the
in-memory `convert_state_dict` (NxDI's path) returns. Exact equality: both sides round the same fp32
products once into the output dtype. Agreement with NxD's own `shard_checkpoint` is checked in
integration/neuron (needs NxD).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsv3_config import MeshCoordinate, ModelConfig, preset
from dsv3_model.cli.main import main
from dsv3_model.neuron import per_rank_files
from dsv3_model.neuron.shard_plan import nxdi_shard_plan
from dsv3_model.neuron.state_dict import EXPERTS, convert_state_dict, expected_keys
from dsv3_weights import CheckpointReader, dequantize_fp8_blocks, make_checkpoint
from dsv3_weights.sharding import dim_ranges

TP = 2
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("fp8"), preset("tiny"), fp8=True, seed=3, progress=False)


def _hf_tensors(src: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, `model.` stripped, FP8 weights dequantized whole into `dtype`."""
    with CheckpointReader(src) as reader:
        block = reader.config().quantization_config.weight_block_size  # type: ignore[union-attr]
        out = {}
        for key in reader:
            if key.endswith("_scale_inv"):
                continue
            tensor = reader.get(key)
            if key + "_scale_inv" in reader:
                tensor = dequantize_fp8_blocks(tensor, reader.get(key + "_scale_inv"), block, dtype)
            out[key.removeprefix("model.")] = tensor
    return out


def _reference(cfg: ModelConfig, hf: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The converted checkpoint, by hand (see the module docstring)."""
    ref = {}
    for key in expected_keys(cfg):
        layer = ".".join(key.split(".")[:2]) + "."
        experts = [f"{layer}mlp.experts.{e}." for e in range(cfg.n_routed_experts)]
        if key.endswith(("rank_util.rank", "spmd_rank.rank")):  # world size == tp here
            ref[key] = torch.arange(TP, dtype=torch.int32)
        elif key.endswith(f"{EXPERTS}.gate_up_proj.weight"):
            ref[key] = torch.stack(
                [torch.cat([hf[f"{p}gate_proj.weight"].T, hf[f"{p}up_proj.weight"].T], 1) for p in experts]
            )
        elif key.endswith(f"{EXPERTS}.down_proj.weight"):
            ref[key] = torch.stack([hf[f"{p}down_proj.weight"].T for p in experts])
        else:
            ref[key] = hf[key.replace("mlp.router.linear_router.", "mlp.gate.").replace("mlp.router.", "mlp.gate.")]
        ref[key] = ref[key].to(dtype) if ref[key].is_floating_point() else ref[key]
    return ref


def _reassemble(
    key: str, shape: tuple[int, ...], ranks: list[dict[str, torch.Tensor]], cfg: ModelConfig
) -> torch.Tensor:
    """The full tensor from the rank files: per split dim, each part's rank pieces in rank order."""
    (split,) = nxdi_shard_plan(cfg)[key] or (None,)
    if split is None:
        assert all(torch.equal(rank[key], ranks[0][key]) for rank in ranks), key
        return ranks[0][key]
    part = shape[split.dim] // split.parts
    width = part // TP
    pieces = [rank[key].narrow(split.dim, p * width, width) for p in range(split.parts) for rank in ranks]
    return torch.cat(pieces, dim=split.dim)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_rank_files_reassemble_to_the_converted_checkpoint(
    dtype: str, fp8_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(per_rank_files, "CHUNK_BYTES", 1024)  # many row chunks per tensor, one expert at a time
    cfg = preset("tiny")
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", str(TP), "--dtype", dtype]) == 0
    names = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert names == [f"tp{r}_sharded_checkpoint.safetensors" for r in range(TP)]
    ranks = [load_file(str(tmp_path / "weights" / name)) for name in names]
    hf = _hf_tensors(fp8_checkpoint, DTYPES[dtype])
    reference = _reference(cfg, hf, DTYPES[dtype])
    in_memory = convert_state_dict(dict(hf), cfg, DTYPES[dtype], TP, TP)
    assert set(in_memory) == set(reference)
    plan = nxdi_shard_plan(cfg)
    for rank, tensors in enumerate(ranks):
        assert set(tensors) == set(reference), rank
        coord = MeshCoordinate(tp_rank=rank, tp_size=TP)
        for key, full in reference.items():
            expected_shape = tuple(sum(e - s for s, e in dim) for dim in dim_ranges(full.shape, plan[key], coord))
            assert tuple(tensors[key].shape) == expected_shape, key
    for key, full in reference.items():
        assert torch.equal(_reassemble(key, tuple(full.shape), ranks, cfg), full), key
        assert in_memory[key].dtype == full.dtype, key
        assert torch.equal(in_memory[key], full), key
    # tp=2 halves the 48 expert rows: cuts inside the 32-row FP8 blocks, so partial-block dequantization ran.
    assert ranks[0][f"layers.1.{EXPERTS}.gate_up_proj.weight"].shape == (16, 64, 48)


def test_a_failed_run_leaves_no_complete_looking_file(
    fp8_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error while writing rank 1: rank 0's finished file stays, rank 1 has neither file nor `.tmp`,
    and an earlier run's rank-1 file is gone too (no mix of runs)."""
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
    weights.mkdir(parents=True)
    (weights / "tp1_sharded_checkpoint.safetensors").write_bytes(b"an earlier run's file")
    with pytest.raises(OSError, match="injected"):
        per_rank_files.write_per_rank_files(fp8_checkpoint, tmp_path / "partial", tp_degree=TP)
    assert sorted(p.name for p in weights.iterdir()) == ["tp0_sharded_checkpoint.safetensors"]
    finished = load_file(str(tmp_path / "full" / "weights" / "tp0_sharded_checkpoint.safetensors"))
    kept = load_file(str(weights / "tp0_sharded_checkpoint.safetensors"))
    assert finished.keys() == kept.keys()
    assert all(torch.equal(finished[key], kept[key]) for key in finished)


def test_bad_requests_fail_with_a_message(
    fp8_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "2", "--ep", "2"]) == 1
    assert "ep_degree=2" in capsys.readouterr().err
    assert main(["shard", str(fp8_checkpoint), str(tmp_path), "--tp", "3"]) == 1  # 4 heads are not 3 slices
    assert "cannot be cut into 3 tp slices" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").iterdir())

"""`dsv3 shard --tp N [--ep M]` writes what NxDI's own pre-sharding writes, and the model runs from those files.

1. Against NxD's `shard_checkpoint` (what NxDI's `save_sharded_checkpoint` calls), run on CPU under torchrun at
   tp=2 on the checkpoint as NxDI's `checkpoint_loader_fn` loads it: the same file names and, per rank, the same
   keys, dtypes and bits. Cases: the tiny preset and the V2-Lite-like config (fp32 HF checkpoints, `torch_dtype`
   fp32), and the tiny preset's FP8 block-quantized checkpoint sharded for `torch_dtype` bf16 in the default
   FP8-expert layout (routed experts: our per-rank FP8 stacks and scale grids against NxD's slicing of its
   `QuantizedExpertFused*` parameters; every other linear: our per-slice dequantization + cast against NxDI's
   whole-tensor dequantization + NxDI's cast); each without and with expert parallelism (moe_ep_degree 2: each
   rank keeps half the experts plus NxD's `local_expert_indices`); and tiny at tp=4 x ep=2, where two ranks
   (moe_tp 2) share each expert block, each with half of its intermediate dimension. In weight format `fp8`
   (`--weights fp8`; tiny at tp=2, tp=4 x ep=2, and the V2-Lite-like FP8 checkpoint, whose `q_proj` replaces
   q LoRA) the other linears too: our halved FP8 slices and device-grid scale slices against NxD's slicing of
   its `QuantizedColumnParallel` / `QuantizedRowParallel` parameters.
2. Loading: NxDI's pre-sharded load (`load()` with `save_sharded_checkpoint`) needs a traced model on
   a Neuron host, so here each rank (tp=2; tp=2 x ep=2; tp=4 x ep=2) of the CPU model has every weight
   set to NaN (FP8 ones too), loads its own `dsv3 shard` file (no missing key but the KV cache, no extra key), and
   must reproduce transformers' prefill logits (1e-4, as test_causal_lm_cpu) and 16 greedy tokens; also with the
   FP8 checkpoint's FP8 experts (tp=2, tp=2 x ep=2) and in weight format `fp8` (tp=2).
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FORMATS = [("tiny", False, "fp32"), ("v2-lite-like", False, "fp32"), ("tiny", True, "bf16")]


def _dsv3_shard(checkpoint: Path, dst: Path, dtype: str, tp: int, ep: int, weights: str | None = None) -> Path:
    from dsv3_model.cli.main import main

    command = ["shard", str(checkpoint), str(dst), "--tp", str(tp), "--ep", str(ep), "--dtype", dtype]
    assert main(command + ([] if weights is None else ["--weights", weights])) == 0
    return dst / "weights"


# (config, FP8 source, torch_dtype, tp, ep, weights: None the default); tp 4 x ep 2 puts two ranks (moe_tp 2) on
# each expert block.
SHARD_CASES = [
    *[(name, fp8, dtype, 2, ep, None) for ep in (1, 2) for name, fp8, dtype in FORMATS],
    ("tiny", False, "fp32", 4, 2, None),
    ("tiny", True, "bf16", 4, 2, None),  # FP8 experts, moe_tp 2 within each expert block
    ("tiny", True, "bf16", 2, 1, "fp8"),
    ("tiny", True, "bf16", 4, 2, "fp8"),
    ("v2-lite-like-fp8", True, "bf16", 2, 1, "fp8"),
]


@pytest.mark.parametrize(("name", "fp8", "dtype", "tp", "ep", "weights"), SHARD_CASES)
def test_dsv3_shard_files_equal_nxd_shard_checkpoint(
    name: str, fp8: bool, dtype: str, tp: int, ep: int, weights: str | None, tmp_path: Path
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from dsv3_config.inventory.fp8_experts import fp8_expert_grid
    from dsv3_model.neuron import expected_keys, nxdi_shard_plan

    cfg = harness.model_config(name)
    grid = fp8_expert_grid(cfg, tp // ep) if fp8 else None  # the default for an FP8 checkpoint, and fp8's
    linears = weights == "fp8"
    checkpoint, nxd_dir = tmp_path / "hf", tmp_path / "nxd"
    (harness.save_fp8_checkpoint if fp8 else harness.save_hf_checkpoint)(cfg, checkpoint)
    worker_args = [str(checkpoint), str(nxd_dir), dtype, str(ep), *([] if weights is None else [weights])]
    harness.torchrun("shard_worker.py", 29533, *worker_args, ranks=tp)
    ours_dir = _dsv3_shard(checkpoint, tmp_path / "compiled", dtype, tp, ep, weights)

    keys = set(expected_keys(cfg, ep, grid, linears))
    assert set(nxdi_shard_plan(cfg, ep, grid, linears)) == keys
    assert sorted(p.name for p in ours_dir.glob("*.safetensors")) == sorted(p.name for p in nxd_dir.iterdir())
    for rank in range(tp):
        file_name = f"tp{rank}_sharded_checkpoint.safetensors"
        nxd, ours = load_file(str(nxd_dir / file_name)), load_file(str(ours_dir / file_name))
        assert set(ours) == set(nxd), f"rank {rank}: {sorted(set(ours) ^ set(nxd))[:5]}"
        assert set(ours) == keys
        experts = [key for key in ours if key.endswith("_proj.weight") and ".expert_mlps." in key]
        assert {ours[key].dtype for key in experts} == {torch.float8_e4m3fn if fp8 else DTYPES[dtype]}
        query = [key for key in ours if key.endswith(("q_b_proj.weight", "q_proj.weight"))]
        assert {ours[key].dtype for key in query} == {torch.float8_e4m3fn if linears else DTYPES[dtype]}
        for key, tensor in nxd.items():
            assert ours[key].dtype == tensor.dtype, f"rank {rank}: {key}"
            assert ours[key].shape == tensor.shape, f"rank {rank}: {key}"
            assert torch.equal(ours[key].view(torch.uint8), tensor.view(torch.uint8)), f"rank {rank}: {key}"
        with safe_open(str(ours_dir / file_name), "pt") as f, safe_open(str(nxd_dir / file_name), "pt") as g:
            # The one header difference: dsv3's writer records safetensors' `format: pt` (as transformers
            # does); NxD writes no metadata. NxDI's loader (`safetensors.torch.load_file`) ignores it.
            assert (f.metadata(), g.metadata()) == ({"format": "pt"}, None)


# ep 2: batch 4 (test_causal_lm_cpu); fp8: the FP8 checkpoint, FP8 routed experts (its default) in model and files
LOAD_CASES = [(2, 1, 1, False), (2, 2, 4, False), (4, 2, 4, False), (2, 1, 1, True), (2, 2, 4, True)]
LOAD_CASES_WEIGHTS = [(*case, None) for case in LOAD_CASES] + [(2, 1, 1, True, "fp8")]


@pytest.mark.parametrize(("tp", "ep", "batch", "fp8", "weights"), LOAD_CASES_WEIGHTS)
def test_model_runs_from_dsv3_shard_files(
    tp: int, ep: int, batch: int, fp8: bool, weights: str | None, tmp_path: Path
) -> None:
    cfg = harness.model_config("tiny")
    checkpoint = tmp_path / "hf"
    hf = (harness.save_fp8_checkpoint if fp8 else harness.save_hf_checkpoint)(cfg, checkpoint)
    rank_files = _dsv3_shard(checkpoint, tmp_path / "compiled", "fp32", tp, ep, weights)
    out_file = tmp_path / "rank0.pt"
    args = ("tiny", str(checkpoint), str(out_file), "--rank-files", str(rank_files), "--ep", str(ep))
    weight_args = () if weights is None else ("--weights", weights)
    harness.torchrun("tp_worker.py", 29534, *args, "--batch", str(batch), *weight_args, ranks=tp)

    ids_BS = harness.prompt(cfg, batch)
    with torch.no_grad():
        expected_BV = hf(ids_BS).logits[:, -1]
    expected_BS = harness.hf_greedy_tokens(hf, ids_BS)
    rank0 = torch.load(out_file)
    assert rank0["expert_dtype"] == str(torch.float8_e4m3fn if fp8 else torch.float32)
    assert rank0["query_dtype"] == str(torch.float8_e4m3fn if weights == "fp8" else torch.float32)
    torch.testing.assert_close(rank0["logits"], expected_BV, atol=1e-4, rtol=0)
    assert rank0["tokens"].tolist() == expected_BS.tolist()

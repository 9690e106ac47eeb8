"""`nxdi_shard_plan` applied with dsv3-weights' `shard_tensor` reproduces NxD's own `shard_checkpoint`
per-rank files (what NxDI's `save_sharded_checkpoint` writes) key for key and bit for bit, at tp=2.
This is the layout `dsv3 shard` must write for NxDI; the CLI itself is not wired to it yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness
import pytest
import torch

TP = 2


@pytest.mark.parametrize("name", ["tiny", "v2-lite-like"])
def test_plan_slices_equal_nxd_shard_checkpoint(name: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from dsv3_config import MeshCoordinate
    from dsv3_model.neuron import (
        Dsv3InferenceConfig,
        Dsv3NeuronConfig,
        convert_hf_to_neuron_state_dict,
        nxdi_shard_plan,
    )
    from dsv3_weights.sharding import shard_tensor

    cfg = harness.model_config(name)
    checkpoint, out_dir = tmp_path / "hf", tmp_path / "nxd"
    harness.save_hf_checkpoint(cfg, checkpoint)
    worker = Path(__file__).parent / "shard_worker.py"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(TP),
        "--master-port",
        "29533",
        str(worker),
        str(checkpoint),
        str(out_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]

    neuron_config = Dsv3NeuronConfig(
        tp_degree=TP, batch_size=1, seq_len=64, max_context_length=64, torch_dtype=torch.float32, on_cpu=True
    )
    config = Dsv3InferenceConfig.from_model_config(cfg, neuron_config)
    hf = {key.removeprefix("model."): value for key, value in load_file(str(checkpoint / "model.safetensors")).items()}
    converted = convert_hf_to_neuron_state_dict(hf, config)
    plan = nxdi_shard_plan(cfg)
    assert set(plan) == set(converted)
    for rank in range(TP):
        nxd = load_file(str(out_dir / f"tp{rank}_sharded_checkpoint.safetensors"))
        assert set(nxd) == set(converted), f"rank {rank}"
        coord = MeshCoordinate(tp_rank=rank, tp_size=TP)
        for key, full in converted.items():
            ours = shard_tensor(full, plan[key], coord)
            assert ours.dtype == nxd[key].dtype, f"rank {rank}: {key}"
            assert torch.equal(ours, nxd[key]), f"rank {rank}: {key}"

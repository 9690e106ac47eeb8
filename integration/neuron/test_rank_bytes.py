"""Per-rank weight bytes of the NxDI model as built (NxD CPU mode, BF16) equal what `dsv3 plan` reports for the
same config and mesh, module family by module family: tp=2, tp=4 and tp=2 x ep=2 on `tiny` (16 routed experts,
q LoRA, a shared expert, a dense layer), as a BF16 checkpoint and as an FP8 one, the FP8 one in weight format
`fp8-experts` (its default: FP8 routed-expert stacks plus fp32 block scales) and `fp8` (also the other linears
`dsv3_config.inventory.fp8_linears` names, FP8 with their device-grid scales), so the planner's `dsv3` layout
is the layout the adapter builds in each format.

Measured: every floating-point tensor of each rank's traced module (`rank_bytes_worker.py`), against the
`--json` of `dsv3 plan --model CHECKPOINT`. Tolerance 1% per family (the plan's bytes are closed forms of the
shapes; both count BF16 as 2 bytes, FP8 as 1 and its scales as 4, so any difference is a tensor placed
differently). And the latent
projections (`q_a_proj`, `kv_a_proj_with_mqa`) on each rank are exactly 1/tp of the checkpoint's, counted from
the safetensors headers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import harness
import pytest

MESHES = ((2, 1), (4, 1), (2, 2))  # (tp, ep)
CASES = [(tp, ep, weights) for weights in ("bf16", "fp8-experts", "fp8") for tp, ep in MESHES]
# Parameters held FP8, by weight format: the planner's params of these families (attention: all but kv_b_proj)
FP8_FAMILIES = {"bf16": (), "fp8-experts": ("experts",)}
FP8_FAMILIES["fp8"] = ("experts", "latent_projections", "attention", "shared_experts", "dense_mlp")
# The families (norms and the router bias, 2 KB on tiny, are not among them).
FAMILIES = ("latent_projections", "attention", "router", "experts", "shared_experts", "dense_mlp")
FAMILIES += ("embeddings", "lm_head")
RELATIVE_TOL = 0.01
BF16_BYTES = 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """tiny as a BF16 checkpoint (no quantization_config) and as an FP8 one, by `fp8`."""
    bf16, fp8 = tmp_path_factory.mktemp("tiny"), tmp_path_factory.mktemp("tiny-fp8")
    harness.save_hf_checkpoint(harness.model_config("tiny").replace(quantization_config=None), bf16)
    harness.save_fp8_checkpoint(harness.model_config("tiny"), fp8)
    return {False: bf16, True: fp8}


def planned_bytes(
    checkpoint: Path, tp: int, ep: int, batch: int, weights: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    from dsv3_model.cli.main import main

    capsys.readouterr()
    argv = ["plan", "--model", str(checkpoint), "--tp", str(tp), "--ep", str(ep), "--batch", str(batch)]
    argv += ["--weights", weights]
    assert main([*argv, "--seq-len", "64", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["weights_per_rank"]


def checkpoint_latent_bytes(checkpoint: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            if key.endswith(("self_attn.q_a_proj.weight", "self_attn.kv_a_proj_with_mqa.weight")):
                shape = f.get_slice(key).get_shape()
                total += shape[0] * shape[1] * BF16_BYTES
    return total


@pytest.mark.parametrize(("tp", "ep", "weights"), CASES)
def test_rank_bytes_equal_the_plan(
    checkpoints: dict[bool, Path], tp: int, ep: int, weights: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, checkpoint = harness.model_config("tiny"), checkpoints[weights != "bf16"]
    # Expert-parallel token generation needs tokens x top_k >= experts (Dsv3InferenceConfig refuses fewer).
    batch = 1 if ep == 1 else cfg.n_routed_experts // cfg.num_experts_per_tok
    args = [str(checkpoint), str(tmp_path), str(ep), str(batch), weights]
    harness.torchrun("rank_bytes_worker.py", 29541 + tp + 10 * ep, *args, ranks=tp)
    plan = planned_bytes(checkpoint, tp, ep, batch, weights, capsys)
    kv_b_per_rank = cfg.num_hidden_layers * cfg.num_attention_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    kv_b_per_rank = kv_b_per_rank * cfg.kv_lora_rank // tp  # kv_b_proj stays BF16 (read as a matrix)
    held_fp8 = {family: plan[family]["params_per_rank"] for family in FP8_FAMILIES[weights]}
    if "attention" in held_fp8:
        held_fp8["attention"] -= kv_b_per_rank
    whole_latent = checkpoint_latent_bytes(checkpoint)
    for rank in range(tp):
        measured = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for family in FAMILIES:
            want, got = plan[family]["bytes_per_rank"], measured.get(family, 0)
            assert abs(got - want) <= RELATIVE_TOL * want, f"rank {rank} {family}: built {got} B, planned {want} B"
        if weights != "fp8":  # BF16 latent projections: 2 bytes a parameter, as the BF16 checkpoint's
            assert measured["latent_projections"] * tp == whole_latent, f"rank {rank}"
        assert measured["fp8_params"] == held_fp8, f"rank {rank}"

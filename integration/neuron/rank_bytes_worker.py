"""One rank of the per-rank weight-bytes measurement, started by `test_rank_bytes.py` under torchrun.

Usage: torchrun --nproc-per-node N rank_bytes_worker.py CHECKPOINT_DIR OUT_DIR EP BATCH [WEIGHTS]
Every rank builds the traced module `NeuronDsv3Model` at tp=N the way NxDI's `to_cpu()` does (gloo,
`initialize_model_parallel`, the model class; NxDI `models/application_base.py:556-605`) from an fp32 config (weights
`dsv3_weights` WEIGHTS, default the checkpoint's: FP8 routed experts for an FP8 checkpoint) and casts it to BF16 as
NxDI does on a
Neuron host (`models/model_wrapper.py:1459-1475`: every float but FP8 to BF16, parameters named `*scale` back to
fp32), without loading weights: `to_cpu()` itself refuses BF16 above tp=1 (gloo has no bf16 collectives) and
bytes need no values. It writes `rank{r}.json`: the bytes of
every floating-point tensor the module holds (the KV cache aside: state, not weights), per module family, and
under `fp8_params` how many of each family's parameters are FP8.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import cpu_moe_groups
import neuron_stand_ins

# Key fragments of NeuronDsv3Model's state dict -> `dsv3 plan` family; first match wins.
FAMILY_FRAGMENTS = (
    ("kv_mgr.", None),
    ("layernorm.", "norms_and_biases"),
    ("e_score_correction_bias", "norms_and_biases"),
    ("self_attn.q_a_proj.", "latent_projections"),
    ("self_attn.kv_a_proj_with_mqa.", "latent_projections"),
    ("self_attn.", "attention"),
    ("mlp.router.", "router"),
    ("mlp.expert_mlps.", "experts"),
    ("mlp.shared_experts.", "shared_experts"),
    ("mlp.", "dense_mlp"),
    ("embed_tokens.", "embeddings"),
    ("lm_head.", "lm_head"),
)


def family_of(key: str) -> str | None:
    if key == "norm.weight":
        return "norms_and_biases"
    for fragment, family in FAMILY_FRAGMENTS:
        if fragment in key:
            return family
    raise KeyError(f"no module family for {key}")


def family_bytes(module: torch.nn.Module) -> dict[str, object]:
    totals: dict[str, int] = {}
    fp8: dict[str, int] = {}
    for key, tensor in module.state_dict().items():
        if not tensor.is_floating_point():  # SPMDRank index vectors
            continue
        family = family_of(key)
        if family is None:
            continue
        totals[family] = totals.get(family, 0) + tensor.numel() * tensor.element_size()
        if tensor.dtype == torch.float8_e4m3fn:  # how many weights are held in FP8, to check which ones
            fp8[family] = fp8.get(family, 0) + tensor.numel()
    return {**totals, "fp8_params": fp8}


def main(checkpoint: str, out_dir: str, ep: str, batch: str, weights: str | None = None) -> None:
    neuron_stand_ins.install()
    import harness
    from neuronx_distributed.parallel_layers.parallel_state import initialize_model_parallel

    from dsv3_model.neuron import NeuronDsv3Model

    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    expert_parallel = cpu_moe_groups.neuron_options(int(ep), world)
    options = {**expert_parallel, "dsv3_weights": weights}
    config = harness.inference_config(Path(checkpoint), tp_degree=world, batch_size=int(batch), **options)
    os.environ["NXD_CPU_MODE"] = "1"
    torch.distributed.init_process_group("gloo")
    initialize_model_parallel(tensor_model_parallel_size=world, skip_collective_init=True)
    module = NeuronDsv3Model(config)
    module._apply(lambda t: t.to(torch.bfloat16) if t.is_floating_point() and t.dtype != torch.float8_e4m3fn else t)
    for name, param in module.named_parameters():
        if name.endswith("scale"):
            param.data = param.data.to(torch.float32)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(family_bytes(module)))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:6])

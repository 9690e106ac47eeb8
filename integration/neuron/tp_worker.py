"""One rank of a tensor-parallel NxDI CPU run, started by the suite under `torchrun` (gloo, fp32).

Usage: torchrun --nproc-per-node N tp_worker.py CONFIG CHECKPOINT_DIR OUT_FILE [--rank-files DIR] [--ep M]
                [--batch B] [--new-tokens T] [--weights bf16|fp8-experts|fp8]
Every rank builds `NeuronDsv3ForCausalLM` at tp=N from the HF checkpoint and runs the same prefill
and greedy generation of B prompts (the collectives need all ranks); rank 0 saves the last-token prefill
logits, the generated ids and the routed experts its first MoE layer holds (`local_experts`, the
`spmd_rank.local_expert_indices` row; all experts without expert parallelism) with `torch.save` for the
test to compare with transformers.

`--new-tokens` sets the greedy steps (default `harness.NEW_TOKENS`); `--weights` the NeuronConfig
`dsv3_weights` (default: the checkpoint's, FP8 routed experts for an FP8 checkpoint). Rank 0 also saves the
dtype its weights are held in: routed experts (`expert_dtype`) and the first layer's `q_b_proj` or `q_proj`.

With `--ep M` the routed experts are split over M expert-parallel groups of N/M ranks (NeuronConfig
`moe_ep_degree` M, `moe_tp_degree` N/M), NxD's MoE groups built for gloo by `cpu_moe_groups`.

With `--rank-files DIR` (`dsv3 shard` output, `tp{rank}_sharded_checkpoint.safetensors`), each rank first
overwrites every weight of its model with NaN and then loads its own rank file (what NxDI's pre-sharded
load gives each rank on a Neuron host; that path needs a traced model, so on CPU the file goes through
`load_state_dict`): the file must cover every tensor but the KV cache, with no extra key.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import cpu_moe_groups
import neuron_stand_ins


def load_rank_file(model: Any, rank_files: Path, rank: int) -> None:
    from safetensors.torch import load_file

    from dsv3_model.nxdi_checkpoint.per_rank_files import rank_file_name

    module = model.context_encoding_model.model  # one module shared by every submodel in CPU mode
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not key.startswith("kv_mgr."):  # the cache is state, not weights
                if tensor.dtype == torch.float8_e4m3fn:  # no fp8 fill kernel: its NaN bits (0x7f)
                    tensor.view(torch.uint8).fill_(0x7F)
                else:
                    tensor.fill_(float("nan"))
    weights = load_file(str(rank_files / rank_file_name(rank)))
    result = module.load_state_dict(weights, strict=False)
    if result.unexpected_keys or any(not key.startswith("kv_mgr.") for key in result.missing_keys):
        raise KeyError(f"rank {rank}: unexpected {result.unexpected_keys}, missing {result.missing_keys}")


def local_experts(model: Any) -> list[int]:
    """The routed experts rank's first MoE layer holds: its `local_expert_indices` row, or all of them."""
    module = model.context_encoding_model.model
    moe = next(layer.mlp for layer in module.layers if layer.is_moe)
    stacked = moe.expert_mlps.mlp_op.gate_up_proj.weight.shape[0]
    indices = getattr(moe.expert_mlps.spmd_rank, "local_expert_indices", None)
    experts = list(range(stacked)) if indices is None else indices.flatten().tolist()
    if len(experts) != stacked:
        raise ValueError(f"{stacked} stacked experts but local_expert_indices {experts}")
    return experts


def expert_dtype(model: Any) -> str:
    """The dtype the first MoE layer's routed-expert weights are held in (`float8_e4m3fn` for FP8 experts)."""
    module = model.context_encoding_model.model
    moe = next(layer.mlp for layer in module.layers if layer.is_moe)
    return str(moe.expert_mlps.mlp_op.gate_up_proj.weight.dtype)


def query_dtype(model: Any) -> str:
    """The dtype the first layer's query projection (`q_b_proj`, or `q_proj` without q LoRA) is held in."""
    attention = model.context_encoding_model.model.layers[0].self_attn
    query = attention.q_b_proj if hasattr(attention, "q_b_proj") else attention.q_proj
    return str(query.weight.dtype)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("out_file")
    parser.add_argument("--rank-files")
    parser.add_argument("--ep", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args(argv)
    neuron_stand_ins.install()
    import harness

    cfg = harness.model_config(args.config)
    world = int(os.environ["WORLD_SIZE"])
    expert_parallel = cpu_moe_groups.neuron_options(args.ep, world)
    options = {**expert_parallel, "dsv3_weights": args.weights}
    model = harness.build_neuron_model(Path(args.checkpoint), tp_degree=world, batch_size=args.batch, **options)
    if args.rank_files is not None:
        load_rank_file(model, Path(args.rank_files), int(os.environ["RANK"]))
    ids_BS = harness.prompt(cfg, args.batch)
    logits_BV = harness.prefill_last_logits(model, ids_BS)
    new_tokens = harness.NEW_TOKENS if args.new_tokens is None else args.new_tokens
    tokens_BS = harness.greedy_tokens(model, ids_BS, torch.ones_like(ids_BS), new_tokens)
    if int(os.environ["RANK"]) == 0:
        out = {"logits": logits_BV, "tokens": tokens_BS, "local_experts": local_experts(model)}
        torch.save({**out, "expert_dtype": expert_dtype(model), "query_dtype": query_dtype(model)}, args.out_file)
    # Leave together: a rank exiting with live gloo threads aborts ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

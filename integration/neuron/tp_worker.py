"""One rank of a tensor-parallel NxDI CPU run, started by the suite under `torchrun` (gloo, fp32).

Usage: torchrun --nproc-per-node N tp_worker.py CONFIG CHECKPOINT_DIR OUT_FILE [RANK_FILES_DIR]
Every rank builds `NeuronDsv3ForCausalLM` at tp=N from the HF checkpoint and runs the same prefill
and greedy generation (the collectives need all ranks); rank 0 saves the last-token prefill logits
and the generated ids with `torch.save` for the test to compare with transformers.

With RANK_FILES_DIR (`dsv3 shard` output, `tp{rank}_sharded_checkpoint.safetensors`), each rank first
overwrites every weight of its model with NaN and then loads its own rank file (what NxDI's pre-sharded
load gives each rank on a Neuron host; that path needs a traced model, so on CPU the file goes through
`load_state_dict`): the file must cover every tensor but the KV cache, with no extra key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import neuron_stand_ins


def load_rank_file(model: Any, rank_files: Path, rank: int) -> None:
    from safetensors.torch import load_file

    module = model.context_encoding_model.model  # one module shared by every submodel in CPU mode
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not key.startswith("kv_mgr."):  # the cache is state, not weights
                tensor.fill_(float("nan"))
    weights = load_file(str(rank_files / f"tp{rank}_sharded_checkpoint.safetensors"))
    result = module.load_state_dict(weights, strict=False)
    if result.unexpected_keys or any(not key.startswith("kv_mgr.") for key in result.missing_keys):
        raise KeyError(f"rank {rank}: unexpected {result.unexpected_keys}, missing {result.missing_keys}")


def main(config_name: str, checkpoint: str, out_file: str, rank_files: str | None = None) -> None:
    neuron_stand_ins.install()
    import harness

    cfg = harness.model_config(config_name)
    world = int(os.environ["WORLD_SIZE"])
    model = harness.build_neuron_model(Path(checkpoint), tp_degree=world)
    if rank_files is not None:
        load_rank_file(model, Path(rank_files), int(os.environ["RANK"]))
    ids_BS = harness.prompt(cfg)
    logits_BV = harness.prefill_last_logits(model, ids_BS)
    tokens_BS = harness.greedy_tokens(model, ids_BS, torch.ones_like(ids_BS), harness.NEW_TOKENS)
    if int(os.environ["RANK"]) == 0:
        torch.save({"logits": logits_BV, "tokens": tokens_BS}, out_file)
    # Leave together: a rank exiting with live gloo threads aborts ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])

"""One rank of a tensor-parallel NxDI CPU run, started by the suite under `torchrun` (gloo, fp32).

Usage: torchrun --nproc-per-node N tp_worker.py CONFIG CHECKPOINT_DIR OUT_FILE
Every rank builds `NeuronDsv3ForCausalLM` at tp=N from the HF checkpoint and runs the same prefill
and greedy generation (the collectives need all ranks); rank 0 saves the last-token prefill logits
and the generated ids with `torch.save` for the test to compare with transformers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import neuron_stand_ins


def main(config_name: str, checkpoint: str, out_file: str) -> None:
    neuron_stand_ins.install()
    import harness

    cfg = harness.model_config(config_name)
    world = int(os.environ["WORLD_SIZE"])
    model = harness.build_neuron_model(Path(checkpoint), tp_degree=world)
    ids_BS = harness.prompt(cfg)
    logits_BV = harness.prefill_last_logits(model, ids_BS)
    tokens_BS = harness.greedy_tokens(model, ids_BS, torch.ones_like(ids_BS), harness.NEW_TOKENS)
    if int(os.environ["RANK"]) == 0:
        torch.save({"logits": logits_BV, "tokens": tokens_BS}, out_file)
    # Leave together: a rank exiting with live gloo threads aborts ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])

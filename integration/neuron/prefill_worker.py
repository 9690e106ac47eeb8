"""One rank of a long context-encoding run under `torchrun` (gloo, fp32), started by `test_long_prefill_cpu.py`.

Usage: torchrun --nproc-per-node N prefill_worker.py CONFIG CHECKPOINT_DIR PROMPT_LEN OUT_FILE
Every rank builds `NeuronDsv3ForCausalLM` at tp=N with `seq_len = PROMPT_LEN` and runs one prefill of the
seeded random prompt (`harness.long_prompt`); rank 0 saves the last-token logits with `torch.save`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import neuron_stand_ins


def main(argv: list[str]) -> None:
    config, checkpoint, prompt_len, out_file = argv
    neuron_stand_ins.install()
    import harness

    cfg = harness.model_config(config)
    world = int(os.environ["WORLD_SIZE"])
    model = harness.build_neuron_model(Path(checkpoint), tp_degree=world, seq_len=int(prompt_len))
    logits_BV = harness.prefill_last_logits(model, harness.long_prompt(cfg, int(prompt_len)))
    if int(os.environ["RANK"]) == 0:
        torch.save({"logits": logits_BV}, out_file)
    torch.distributed.barrier()  # leave together (a rank exiting with live gloo threads aborts)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

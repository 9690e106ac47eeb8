"""One rank of a tensor-parallel serving run under torchrun (gloo, fp32), started by test_serving_cpu.py.

Usage: torchrun --nproc-per-node N serving_worker.py SCENARIO CONFIG CHECKPOINT_DIR OUT_FILE
SCENARIO is one of `serving_driver.run_scenario`'s. Every rank runs the same calls (the collectives need
all ranks); rank 0 saves each request's tokens and per-token logits, and the (tokens, mask length) of
every graph call, with `torch.save`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import neuron_stand_ins


def main(argv: list[str]) -> None:
    scenario, config_name, checkpoint, out_file = argv
    neuron_stand_ins.install()
    import harness
    import serving_driver

    outcome = serving_driver.run_scenario(
        scenario, harness.model_config(config_name), Path(checkpoint), int(os.environ["WORLD_SIZE"])
    )
    if int(os.environ["RANK"]) == 0:
        torch.save(outcome, out_file)
    # Leave together: a rank exiting with live gloo threads aborts.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

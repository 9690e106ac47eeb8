"""One rank of NxD's own checkpoint sharding at tp=N on CPU, started by the suite under `torchrun`.

Usage: torchrun --nproc-per-node N shard_worker.py CHECKPOINT_DIR OUT_DIR
Every rank builds `NeuronDsv3ForCausalLM` (parallel state needs all ranks); rank 0 loads the checkpoint
through NxDI's loader (`get_state_dict`: `model.` stripped, `convert_hf_to_neuron_state_dict`) and
writes NxD's `shard_checkpoint` output, `OUT_DIR/tp{rank}_sharded_checkpoint.safetensors`, the files
NxDI's `save_sharded_checkpoint` produces.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import neuron_stand_ins


def main(checkpoint: str, out_dir: str) -> None:
    neuron_stand_ins.install()
    import harness
    from neuronx_distributed.trace.functions import shard_checkpoint

    model = harness.build_neuron_model(Path(checkpoint), tp_degree=int(os.environ["WORLD_SIZE"]))
    if int(os.environ["RANK"]) == 0:
        state_dict = model.get_state_dict(checkpoint, model.config)
        shard_checkpoint(state_dict, model.context_encoding_model.model, serialize_path=out_dir)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])

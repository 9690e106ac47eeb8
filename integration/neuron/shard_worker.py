"""One rank of NxD's own checkpoint sharding at tp=N on CPU, started by the suite under `torchrun`.

Usage: torchrun --nproc-per-node N shard_worker.py CHECKPOINT_DIR OUT_DIR DTYPE(fp32|bf16) [EP] [WEIGHTS]
With EP > 1 the model has NeuronConfig `moe_ep_degree` EP and `moe_tp_degree` N/EP (NxD's MoE groups built
for gloo by `cpu_moe_groups`), so NxD's preshard hook adds `local_expert_indices` and `shard_children`
keeps each rank's experts. WEIGHTS is the NeuronConfig `dsv3_weights` (default: the checkpoint's). Every rank
builds `NeuronDsv3ForCausalLM` (parallel state needs all ranks);
rank 0 loads the checkpoint through NxDI's loader for `torch_dtype` DTYPE (`checkpoint_loader_fn`: `model.` stripped,
`convert_hf_to_neuron_state_dict`, and for non-fp32 dtypes NxDI's cast of every float) and writes NxD's
`shard_checkpoint` output, `OUT_DIR/tp{rank}_sharded_checkpoint.safetensors`, the files NxDI's
`save_sharded_checkpoint` produces.

NxDI's CPU mode refuses bf16 at tp > 1 (gloo has no bf16 collectives), so the model is built in fp32 and
`torch_dtype` set to DTYPE afterwards: the loader then converts and casts as on a Neuron host. ModelBuilder's
later `cast_weights` (to the module's dtypes, all DTYPE there) has nothing left to change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import cpu_moe_groups
import neuron_stand_ins

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main(checkpoint: str, out_dir: str, dtype: str, ep: str = "1", weights: str | None = None) -> None:
    neuron_stand_ins.install()
    import harness
    from neuronx_distributed.trace.functions import shard_checkpoint

    world = int(os.environ["WORLD_SIZE"])
    expert_parallel = cpu_moe_groups.neuron_options(int(ep), world)
    # Expert parallelism needs tokens x top_k >= experts in every graph (Dsv3InferenceConfig refuses fewer):
    # batch 4 covers the suite's configs (tiny 16 experts / top 4, v2-lite-like 8 / top 2).
    batch = 4 if int(ep) > 1 else 1
    options = {**expert_parallel, "dsv3_weights": weights}
    model = harness.build_neuron_model(Path(checkpoint), tp_degree=world, batch_size=batch, **options)
    model.neuron_config.torch_dtype = model.config.neuron_config.torch_dtype = DTYPES[dtype]
    if int(os.environ["RANK"]) == 0:
        state_dict = model.checkpoint_loader_fn()
        shard_checkpoint(state_dict, model.context_encoding_model.model, serialize_path=out_dir)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:6])

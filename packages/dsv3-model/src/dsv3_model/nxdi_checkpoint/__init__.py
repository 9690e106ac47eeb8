"""The NxDI adapter's checkpoint code, free of NxD/NxDI: it runs (and is tested) wherever torch runs.

`state_dict` maps an HF checkpoint onto the key names and layout of the adapter's modules
(`convert_hf_to_neuron_state_dict`, which NxDI calls); `shard_plan` says how each of those keys splits
over NxDI's tp x ep ranks (`nxdi_shard_plan`); `per_rank_files` writes NxDI's pre-sharded per-rank files
from a checkpoint in bounded memory (`dsv3 shard`). The NxD-importing model classes are in
`dsv3_model.neuron`.
"""

"""`dsv3 golden`: reference logits from a checkpoint that stays on disk (docs/golden.md).

The model is `DeepseekForCausalLM` itself with its embedding, decoder layers and head swapped for
streamed stand-ins that read each layer's weights when it runs (MoE layers: only the chosen experts),
bounded by an LRU of weights. Files: `weight_cache` (the LRU), `source` (counting, dequantizing reads),
`streamed_model` (the swapped-in modules), `golden_file` (the file NxDI reads), `run` (free-running and
teacher-forced runs with progress and summary), `compare` (`dsv3 verify --golden`), `threads` (the OpenMP
wait policy a streamed run wants).
"""

"""Activation / scratch memory: `K_SCRATCH` copies of the largest array each compiled graph computes per
token, for the contrib port calibrated on its two published points, for the dsv3 adapter read off its graphs.

The model. Both compiled graphs (prefill = context encoding "CTE", decode = token generation "TKG") keep a
scratchpad. We charge it as `K_SCRATCH` copies of the largest array the graph materializes, per token:

    scratch = K_SCRATCH * (batch * seq_len + batch) * largest_array_bytes_per_token

`batch * seq_len` tokens for the prefill graph, `batch` for a decode step.

contrib: prefill runs NxD's `forward_all_experts`, whose down projection writes `(E, T, H)` (neuronx_distributed
`modules/moe/expert_mlps.py`): `n_routed_experts / ep * hidden * 2 B` per token (BF16).

dsv3: what the adapter's context-encoding graph computes, traced to HLO (`nox -s neuron_trace`,
`test_planner_prefill_array_is_the_traced_graphs_largest` checks this function against the traced graph's
largest array at 4K and 32K tokens). The largest per-token array is the biggest of
- the residual stream in fp32 (the RMSNorms upcast): `hidden * 4 B`;
- one attention score block (`dsv3_mla.KEY_BLOCK` keys, fp32, the rank's heads): `heads / tp * 1024 * 4 B`
  (the blocked prefill; a prompt within one block computes fewer keys, so this is an upper bound there);
- the routed experts as NxD runs context encoding (`expert_mlps_v2.py:1484-1497`): blockwise once
  `tokens * top_k >= 512` (its largest per-token array is the gathered hidden, `hidden * act`, below the
  fp32 residual). Shorter prompts run every local expert on every token; that regime (under 64 tokens for
  V3) is not charged separately.
The decode graph is charged with the same per-token array (an estimate: not traced).

The calibration. The contrib port loads at seq_len 512 but not at 1024 on trn2 (BF16, TP 64, batch 1,
"TKG model 23.1 GB + CTE scratchpad > 24 GB HBM per NC pair"). With our resident bytes (weights + doubled
cache) and 24 GiB per rank, those two facts bound `K_SCRATCH` to an interval (`calibration_window`,
about [0.64, 1.32]); we take `K_SCRATCH = 1`, inside it, which is the `(E, T, H)` tensor exactly once.
It is calibrated on those two points only: for the dsv3 layout the array sizes are the graph's, the one
copy is the contrib calibration's.
"""

from __future__ import annotations

from dsv3_config import DeploymentConfig, ModelConfig
from dsv3_plan.layouts import Layout

K_SCRATCH = 1.0
ACTIVATION_BYTES = 2  # BF16
FP32_BYTES = 4
# dsv3_mla.KEY_BLOCK (pinned equal by the planner's tests): keys per block of the blocked prefill attention.
PREFILL_KEY_BLOCK = 1024


def experts_materialized(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig) -> int:
    """Experts each prefill token's rows go through: all local ones (contrib), its top-k (dsv3, blockwise)."""
    return cfg.n_routed_experts // dep.ep if layout.prefill_all_experts else cfg.num_experts_per_tok


def prefill_array_bytes_per_token(
    cfg: ModelConfig, dep: DeploymentConfig, activation_bytes: int = ACTIVATION_BYTES
) -> int:
    """The dsv3 adapter's largest context-encoding array per token (module docstring): fp32 residual, one
    attention score block of the rank's heads, or the blockwise experts' gathered hidden."""
    residual = cfg.hidden_size * FP32_BYTES
    score_block = cfg.num_attention_heads // dep.tp * PREFILL_KEY_BLOCK * FP32_BYTES
    experts = cfg.hidden_size * activation_bytes
    return max(residual, score_block, experts)


def scratch_bytes_per_token(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, k: float = K_SCRATCH) -> float:
    """Scratch for one token in a graph: `k` copies of its largest array (V3 contrib: 3.67 MB)."""
    if layout.prefill_all_experts:
        return k * experts_materialized(cfg, layout, dep) * cfg.hidden_size * ACTIVATION_BYTES
    return k * prefill_array_bytes_per_token(cfg, dep)


def scratch_bytes(cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, k: float = K_SCRATCH) -> int:
    """Prefill graph (`batch * seq_len` tokens) plus decode graph (`batch` tokens)."""
    tokens = dep.batch_size * dep.seq_len + dep.batch_size
    return round(tokens * scratch_bytes_per_token(cfg, layout, dep, k))

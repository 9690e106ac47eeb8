"""Floors on step time: the bytes each rank must read, over its HBM bandwidth (and FLOPs for prefill).

Decode step (one new token for each of `batch` sequences, with `seq_len` positions already cached): each
rank reads every non-expert weight it holds once, one embedding row per sequence, its slice of each
routed expert that at least one of the `batch` tokens selected, and the latent cache (one copy; the
contrib decode graph reads only its K slot). Routing is taken as uniform and balanced over ranks, so a
layer touches `E * (1 - (1 - k/E)^tokens)` distinct experts on average (`k` exactly for one token) and each
rank reads `1/ep` of them, each as its `1/moe_tp` slice: EP changes which rank reads an expert, not how
many bytes all ranks read. This is a floor: real routing is imbalanced, and the slowest rank sets the pace.

Prefill of `batch * seq_len` tokens: the same reads with many more experts touched (all of them in the
contrib layout, which runs every expert on every token), plus the cache write, against the matmul FLOPs
at the device's dense BF16 peak: `2 x params` per token for the weights a token uses on this rank, and
absorbed MLA attention, `2 x (2 * kv_lora_rank + qk_rope_head_dim)` FLOPs per head per causal
(query, key) pair. The floor is the larger of the two times.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsv3_config import DeploymentConfig, LayerKind, ModelConfig
from dsv3_plan.devices import Device
from dsv3_plan.kv_cache import CACHE_BYTES_PER_VALUE, latent_cache_bytes
from dsv3_plan.layouts import Layout
from dsv3_plan.weights import FamilyWeights, routed_expert_on_rank


@dataclass(frozen=True)
class StepFloor:
    bytes_per_rank: int  # read from HBM (and written, for the cache) per step
    flops_per_rank: float
    seconds: float  # max(bytes / bandwidth, flops / peak)
    bound: str  # "bandwidth" or "compute"


def experts_touched(cfg: ModelConfig, tokens: int) -> float:
    """Expected distinct routed experts a layer runs for `tokens` tokens under uniform routing."""
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    return e * (1.0 - (1.0 - k / e) ** tokens)


def _step_reads(
    cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, families: tuple[FamilyWeights, ...], experts: float
) -> tuple[dict[str, int], int]:
    """Bytes read per family (experts: `experts` per layer, spread over ep) and the params they hold."""
    expert_params, expert_bytes = routed_expert_on_rank(cfg, layout, dep)
    moe_layers = cfg.layer_kinds.count(LayerKind.MOE)
    reads: dict[str, int] = {}
    params = 0
    for fam in families:
        if fam.name == "experts":
            reads[fam.name] = round(moe_layers * experts / dep.ep * expert_bytes)
            params += round(moe_layers * experts / dep.ep * expert_params)
        elif fam.name == "embeddings":  # a lookup: one row slice per sequence, no FLOPs
            reads[fam.name] = min(dep.batch_size, cfg.vocab_size) * cfg.hidden_size * 2 // dep.tp
        else:
            reads[fam.name] = fam.bytes_per_rank
            params += fam.params_per_rank
    return reads, params


def decode_reads(
    cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, families: tuple[FamilyWeights, ...]
) -> dict[str, int]:
    """Per-family bytes one rank reads in one decode step, plus `kv_cache` (one copy, `seq_len` positions)."""
    reads, _ = _step_reads(cfg, layout, dep, families, experts_touched(cfg, dep.batch_size))
    reads["kv_cache"] = latent_cache_bytes(cfg, dep.batch_size, dep.seq_len, copies=1)
    return reads


def decode_floor(
    cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, families: tuple[FamilyWeights, ...], dev: Device
) -> StepFloor:
    nbytes = sum(decode_reads(cfg, layout, dep, families).values())
    return StepFloor(nbytes, 0.0, nbytes / dev.hbm_bytes_per_s, "bandwidth")


def _attention_flops(cfg: ModelConfig, dep: DeploymentConfig) -> float:
    heads = cfg.num_attention_heads // dep.tp
    pairs = dep.batch_size * dep.seq_len * (dep.seq_len + 1) / 2
    return cfg.num_hidden_layers * heads * pairs * 2 * (2 * cfg.kv_lora_rank + cfg.qk_rope_head_dim)


def prefill_floor(
    cfg: ModelConfig, layout: Layout, dep: DeploymentConfig, families: tuple[FamilyWeights, ...], dev: Device
) -> StepFloor:
    tokens = dep.batch_size * dep.seq_len
    reads, _ = _step_reads(cfg, layout, dep, families, experts_touched(cfg, tokens))
    k = cfg.n_routed_experts if layout.prefill_all_experts else cfg.num_experts_per_tok
    _, params_per_token = _step_reads(cfg, layout, dep, families, float(k))
    cache_write = tokens * cfg.num_hidden_layers * cfg.latent_cache_width * CACHE_BYTES_PER_VALUE * layout.cache_copies
    nbytes = sum(reads.values()) + cache_write
    flops = 2.0 * tokens * params_per_token + _attention_flops(cfg, dep)
    t_bytes, t_flops = nbytes / dev.hbm_bytes_per_s, flops / dev.bf16_flops_per_s
    return StepFloor(nbytes, flops, max(t_bytes, t_flops), "bandwidth" if t_bytes >= t_flops else "compute")

"""Where each kind of tensor lives on the (ep, tp) mesh: the inventory's placement values, one place each.

Changing a layout is one edit here (and its tests). Units keep whole heads together; `parts=2` says the
stacked `gate_up_proj` is `[gate | up]`, each block split on its own.
"""

from __future__ import annotations

from dsv3_config.model_config import ModelConfig
from dsv3_config.shard_plan import Placement, Split

TP_ROWS: Placement = (Split(dim=0, mesh_axis="tp"),)  # column-parallel: output features split
TP_COLUMNS: Placement = (Split(dim=1, mesh_axis="tp"),)  # row-parallel: input features split

# q_a_proj and kv_a_proj_with_mqa weights: row-parallel over tp (their input, the hidden state, is replicated,
# so each rank slices its columns); one all-reduce gives every rank the full latent, which is shared by all
# heads. Their biases and the latent norms stay replicated (a bias is added once, after the sum).
LATENT_PROJECTION: Placement = TP_COLUMNS
# The router weight: split by expert over tp (each logit one full-length fp32 dot product, the [T, E] logits
# all-gathered, so every rank routes every token); its correction bias is replicated.
ROUTER_WEIGHT: Placement = TP_ROWS
# Embedding split across the hidden dim (NxD `ParallelEmbedding(shard_across_embedding=True)`),
# lm_head across the vocab.
EMBEDDING: Placement = TP_COLUMNS
LM_HEAD: Placement = TP_ROWS
# Routed experts: whole experts over ep (dim 0 of both stacks), each expert's intermediate dim over tp.
EXPERTS_GATE_UP: Placement = (Split(dim=0, mesh_axis="ep"), Split(dim=1, mesh_axis="tp", parts=2))
EXPERTS_DOWN: Placement = (Split(dim=0, mesh_axis="ep"), Split(dim=2, mesh_axis="tp"))
# A SwiGLU MLP (dense layers, shared experts): column-parallel gate/up, row-parallel down.
SWIGLU: dict[str, Placement] = {"gate_proj": TP_ROWS, "up_proj": TP_ROWS, "down_proj": TP_COLUMNS}


def query_heads(cfg: ModelConfig) -> Placement:
    """q_proj / q_b_proj: output rows in whole query heads."""
    return (Split(dim=0, mesh_axis="tp", unit=cfg.qk_head_dim),)


def kv_heads(cfg: ModelConfig) -> Placement:
    """kv_b_proj: output rows in whole heads of `[k_nope | v]`."""
    return (Split(dim=0, mesh_axis="tp", unit=cfg.qk_nope_head_dim + cfg.v_head_dim),)


def output_heads(cfg: ModelConfig) -> Placement:
    """o_proj: input columns in whole value heads (each rank returns a partial sum)."""
    return (Split(dim=1, mesh_axis="tp", unit=cfg.v_head_dim),)


# The weight formats the NxDI adapter (dsv3_model.neuron) holds on device, by the planner's `--weights` names:
# `bf16` (every linear in the model dtype; an FP8 checkpoint dequantized on the host), `fp8-experts` (the
# routed experts kept in the checkpoint's FP8 with fp32 block scales in NxD's quantized expert layers, every
# other linear BF16; `fp8_experts.py` has the grid) and `fp8` (as `fp8-experts`, plus the other linears
# `fp8_linears.py` names in NxD's blockwise quantized linear layers). An FP8 checkpoint gets `fp8-experts` by
# default (`default_weight_format`); `fp8` only when asked for.
DEVICE_WEIGHT_FORMATS: tuple[str, ...] = ("bf16", "fp8-experts", "fp8")
FP8_EXPERT_FORMATS: tuple[str, ...] = ("fp8-experts", "fp8")  # the formats that keep the routed experts FP8


def default_weight_format(cfg: ModelConfig) -> str:
    """What the adapter and `dsv3 shard` hold on device unless told otherwise: FP8 routed experts for a
    checkpoint whose config declares FP8 blocks, BF16 otherwise."""
    return "fp8-experts" if cfg.quantization_config is not None else "bf16"


def expert_parallel_min_tokens(cfg: ModelConfig) -> int:
    """Tokens one MoE step needs under expert parallelism: NxD runs an expert-parallel step only when
    `tokens x num_experts_per_tok >= n_routed_experts` (V3: 32); below it takes its selective-loading path,
    which raises in token generation (NxD `modules/moe/expert_mlps_v2.py:1468-1481`)."""
    return -(-cfg.n_routed_experts // cfg.num_experts_per_tok)

"""The NxDI adapter's graphs traced to HLO on XLA:CPU as NxD's `ModelBuilder` traces them for neuronx-cc
(`hlo_trace.py`): zero host syncs and zero aten fallbacks inside each forward, collectives present at tp > 1.

Each graph is one `GRAPHS` entry: the suite config, the submodel tag, tp, and NeuronConfig options (buckets,
chunked prefill, block KV, ... are one more entry each). Runs in `nox -s neuron_trace`; skips elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

CTE, TKG = "context_encoding_model", "token_generation_model"
# The CPU suite's serving options (integration/neuron/serving_driver.py), as one graph per bucket here.
BUCKETS: dict[str, Any] = {
    "enable_bucketing": True,
    "context_encoding_buckets": [32, 64, 128],
    "token_generation_buckets": [64, 128, 256],
}
CONTINUOUS_BATCHING: dict[str, Any] = {"ctx_batch_size": 1, "is_continuous_batching": True}
BF16_EXPERTS: dict[str, Any] = {"dsv3_weights": "bf16"}
FP8_ALL: dict[str, Any] = {"dsv3_weights": "fp8"}  # the other linears FP8 too (docs/nxdi-contract.md section 20)
# Not traced here: on-device sampling at tp > 1 (vLLM's plugin default) takes its top-k from
# `torch_neuronx.xla_impl.ops.TopK` (NxD `operators/topk.py:2`, `:108`), a closed-source custom call this
# machine only has a stand-in for; the sampler runs in the CPU suite instead.


# DeepSeek-R1's shapes, one layer: its first (dense) layer, or one MoE layer (256 experts, top 8); at tp=64,
# 2 heads per rank.
R1_ONE_LAYER, R1_MOE_LAYER = "r1-one-layer", "r1-moe-layer"


@dataclass(frozen=True)
class Graph:
    config: str  # a `harness.model_config` name or R1_ONE_LAYER
    tag: str
    tp: int = 1
    seq_len: int = 64
    batch: int = 1
    dtype: torch.dtype = torch.float32
    bucket_rank: int = 0
    neuron: dict[str, Any] = field(default_factory=dict)


# The block KV cache as vLLM's plugin turns it on with prefix caching (blocks of 16), with context buckets for a
# 16-token suffix and a 64-token prompt and one 48-token prefix bucket: CTE buckets [16, 0], [16, 48], [64, 0],
# [64, 48] (ranks 0-3), token generation [1, 64]. Chunked prefill runs the same prefix-caching graphs.
BLOCK_KV: dict[str, Any] = {
    "is_block_kv_layout": True,
    "is_prefix_caching": True,
    "pa_block_size": 16,
    "pa_num_blocks": 16,
    "enable_bucketing": True,
    "context_encoding_buckets": [16, 64],
    "prefix_buckets": [48],
    "token_generation_buckets": [64],
}
CHUNKED_PREFILL = {**{k: v for k, v in BLOCK_KV.items() if k != "is_prefix_caching"}, "chunked_prefill_config": {}}

GRAPHS: dict[str, Graph] = {
    "tiny-cte-tp1": Graph("tiny", CTE),
    "tiny-tkg-tp1": Graph("tiny", TKG),
    "tiny-cte-tp2": Graph("tiny", CTE, tp=2),
    "tiny-tkg-tp2": Graph("tiny", TKG, tp=2),
    "v2-lite-like-cte-tp2-bs2": Graph("v2-lite-like", CTE, tp=2, batch=2),
    "v2-lite-like-tkg-tp2-bs2": Graph("v2-lite-like", TKG, tp=2, batch=2),
    "tiny-cte-block-kv-tp2": Graph("tiny", CTE, tp=2, bucket_rank=2, neuron=BLOCK_KV),
    "tiny-cte-prefix-cached-tp2": Graph("tiny", CTE, tp=2, bucket_rank=1, neuron=BLOCK_KV),
    "tiny-cte-chunked-prefill-tp2": Graph("tiny", CTE, tp=2, bucket_rank=3, neuron=CHUNKED_PREFILL),
    "tiny-tkg-block-kv-tp2": Graph("tiny", TKG, tp=2, neuron=BLOCK_KV),
    "tiny-cte-4k-tp2": Graph("tiny", CTE, tp=2, seq_len=4096),
    "r1-one-layer-cte-32k-tp64": Graph(R1_ONE_LAYER, CTE, tp=64, seq_len=32768, dtype=torch.bfloat16),
    "r1-moe-layer-cte-32k-tp64": Graph(R1_MOE_LAYER, CTE, tp=64, seq_len=32768, dtype=torch.bfloat16),
    # Serving (issue 14): each bucket of the bucketing suite, and continuous batching (4 slots, prefill alone).
    **{
        f"tiny-cte-tp2-bucket{bucket}": Graph("tiny", CTE, tp=2, seq_len=256, bucket_rank=rank, neuron=BUCKETS)
        for rank, bucket in enumerate(BUCKETS["context_encoding_buckets"])
    },
    **{
        f"tiny-tkg-tp2-bucket{bucket}": Graph("tiny", TKG, tp=2, seq_len=256, bucket_rank=rank, neuron=BUCKETS)
        for rank, bucket in enumerate(BUCKETS["token_generation_buckets"])
    },
    "tiny-cte-tp2-cb4": Graph("tiny", CTE, tp=2, batch=4, neuron=CONTINUOUS_BATCHING),
    "tiny-tkg-tp2-cb4": Graph("tiny", TKG, tp=2, batch=4, neuron=CONTINUOUS_BATCHING),
    # Issue 15: the FP8 configs above (tiny, R1) hold their routed experts in FP8 by default; BF16 experts by
    # option, and R1's MoE layer decoding with FP8 experts at tp=64.
    **{
        f"tiny-{tag}-tp2-bf16-experts": Graph("tiny", sub, tp=2, neuron=BF16_EXPERTS)
        for tag, sub in (("cte", CTE), ("tkg", TKG))
    },
    "r1-moe-layer-tkg-tp64": Graph(R1_MOE_LAYER, TKG, tp=64, dtype=torch.bfloat16),
    # Weights `fp8`: attention, latent projections, dense and shared-expert MLPs in NxD's FP8 blockwise linears.
    **{f"tiny-{tag}-tp2-fp8": Graph("tiny", sub, tp=2, neuron=FP8_ALL) for tag, sub in (("cte", CTE), ("tkg", TKG))},
    "r1-one-layer-tkg-tp64-fp8": Graph(R1_ONE_LAYER, TKG, tp=64, dtype=torch.bfloat16, neuron=FP8_ALL),
}
# Graphs whose routed experts are held in FP8 (the default for the FP8 configs): their HLO carries f8e4m3fn.
FP8_EXPERT_GRAPHS = ("tiny-cte-tp2", "tiny-tkg-tp2", "r1-moe-layer-cte-32k-tp64", "r1-moe-layer-tkg-tp64")
# Prefill graphs longer than one key block: no intermediate may be an [S, S] (score or mask) array.
LONG_PREFILLS = ("tiny-cte-4k-tp2", "r1-one-layer-cte-32k-tp64", "r1-moe-layer-cte-32k-tp64")


def model_config(name: str) -> Any:
    import harness

    from dsv3_config import preset

    if name == R1_ONE_LAYER:
        return preset("deepseek-r1").replace(num_hidden_layers=1)
    if name == R1_MOE_LAYER:
        return preset("deepseek-r1").replace(num_hidden_layers=1, first_k_dense_replace=0)
    return harness.model_config(name)


def build_app(graph: Graph) -> Any:
    """The application object as users build it (not `to_cpu()`: the builder constructs the traced modules)."""
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig, NeuronDsv3ForCausalLM

    neuron_config = Dsv3NeuronConfig(
        tp_degree=graph.tp,
        batch_size=graph.batch,
        seq_len=graph.seq_len,
        max_context_length=graph.seq_len,
        torch_dtype=graph.dtype,
        **graph.neuron,
    )
    config = Dsv3InferenceConfig.from_model_config(model_config(graph.config), neuron_config)
    return NeuronDsv3ForCausalLM("unused-no-weights-are-loaded", config)


_TRACED: dict[str, Any] = {}


def traced_graph(name: str) -> Any:
    """`hlo_trace.GraphTrace` of `GRAPHS[name]`, traced once per session (and kept under DSV3_TRACE_DUMP)."""
    import hlo_trace

    if name not in _TRACED:
        graph = GRAPHS[name]
        _TRACED[name] = hlo_trace.trace_submodel(build_app(graph), graph.tag, graph.bucket_rank)
        if os.environ.get("DSV3_TRACE_DUMP"):
            Path(os.environ["DSV3_TRACE_DUMP"]).mkdir(parents=True, exist_ok=True)
            (Path(os.environ["DSV3_TRACE_DUMP"]) / f"{name}.hlo.txt").write_text(_TRACED[name].hlo)
    return _TRACED[name]


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_traces_to_hlo_without_host_sync_or_fallback(name: str) -> None:
    graph, traced = GRAPHS[name], traced_graph(name)
    assert "ENTRY" in traced.hlo
    assert traced.count("dot") > 0, "nothing was lowered"
    assert traced.host_syncs == 0, f"{traced.host_syncs} host syncs inside the {graph.tag} forward"
    assert traced.fallbacks == {}, f"aten fallbacks: {traced.fallbacks}"
    if graph.tp > 1:
        assert traced.count("all-reduce") > 0, "a tp > 1 graph without an all-reduce is not sharded"
    print(f"{name}: largest intermediate {traced.largest_intermediate()}")


@pytest.mark.parametrize("name", LONG_PREFILLS)
def test_long_prefill_holds_no_square_array(name: str) -> None:
    """Context encoding beyond one key block runs blocked: the largest array is linear in S, no [S, S]."""
    seq, traced = GRAPHS[name].seq_len, traced_graph(name)
    square = [tensor for tensor in traced.intermediates() if tensor.shape.count(seq) >= 2]
    assert not square, f"[S, S] arrays in the graph: {[str(tensor) for tensor in square[:3]]}"
    largest = traced.largest_intermediate()
    assert seq in largest.shape  # the test sees the prompt-sized arrays at all
    print(f"{name}: largest intermediate {largest}")


@pytest.mark.parametrize("name", [*FP8_EXPERT_GRAPHS, "tiny-cte-tp2-bf16-experts", "tiny-tkg-tp2-bf16-experts"])
def test_fp8_expert_graphs_take_fp8_weights(name: str) -> None:
    """With FP8 experts the graph's parameters include `f8e4m3fn` arrays (NxD's quantized expert layers,
    dequantized inside the graph); with BF16 experts none."""
    fp8 = "f8e4m3fn[" in traced_graph(name).hlo
    assert fp8 == (name in FP8_EXPERT_GRAPHS)


# tiny at tp=2, per rank: q_b_proj [48, 48], o_proj [64, 24], kv_a_proj_with_mqa [40, 32], dense gate_proj [80, 64],
# shared-expert gate_proj [24, 64]; kv_b_proj [56, 32] stays in the model dtype (f32 here).
FP8_LINEAR_SHAPES = ("f8e4m3fn[48,48]", "f8e4m3fn[64,24]", "f8e4m3fn[40,32]", "f8e4m3fn[80,64]", "f8e4m3fn[24,64]")


@pytest.mark.parametrize("tag", ["cte", "tkg"])
def test_fp8_weights_graphs_take_fp8_linears(tag: str) -> None:
    """Weights `fp8`: the other linears' FP8 arrays are graph inputs (dequantized inside); not with `fp8-experts`."""
    fp8, experts = traced_graph(f"tiny-{tag}-tp2-fp8").hlo, traced_graph(f"tiny-{tag}-tp2").hlo
    assert [shape in fp8 for shape in FP8_LINEAR_SHAPES] == [True] * len(FP8_LINEAR_SHAPES)
    assert [shape in experts for shape in FP8_LINEAR_SHAPES] == [False] * len(FP8_LINEAR_SHAPES)
    assert "f8e4m3fn[56,32]" not in fp8
    assert "f32[56,32]" in fp8


class _SyncsAndFallsBack(torch.nn.Module):
    """A forward with one host sync (`int()` of a device value) and one op torch_xla runs on the host."""

    def forward(self, x_N: torch.Tensor) -> torch.Tensor:
        count = int((x_N > 0).sum())
        return torch.unique_consecutive(x_N)[:1] * count


def test_counters_see_a_host_sync_and_a_fallback() -> None:
    """The counters the graph test reads do count: a forward known to sync and to fall back is caught."""
    import hlo_trace

    traced = hlo_trace.trace_forward("control", _SyncsAndFallsBack(), [torch.tensor([1.0, 1.0, -2.0])])
    assert traced.host_syncs >= 1
    assert "aten::unique_consecutive" in traced.fallbacks


@pytest.mark.parametrize("name", LONG_PREFILLS)
def test_planner_prefill_array_is_the_traced_graphs_largest(name: str) -> None:
    """`dsv3 plan`'s prefill scratch (dsv3 layout) charges, per token, exactly the largest array the traced
    context-encoding graph computes (`dsv3_plan.scratch.prefill_array_bytes_per_token`)."""
    from dsv3_config import DeploymentConfig
    from dsv3_plan.scratch import prefill_array_bytes_per_token

    graph, traced = GRAPHS[name], traced_graph(name)
    dep = DeploymentConfig(tp=graph.tp, seq_len=graph.seq_len, batch_size=graph.batch)  # tiny's 4K: past its limit
    per_token = prefill_array_bytes_per_token(model_config(graph.config), dep, activation_bytes=graph.dtype.itemsize)
    assert traced.largest_intermediate().nbytes == per_token * graph.batch * graph.seq_len

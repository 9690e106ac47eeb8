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
# Not traced here: on-device sampling at tp > 1 (vLLM's plugin default) takes its top-k from
# `torch_neuronx.xla_impl.ops.TopK` (NxD `operators/topk.py:2`, `:108`), a closed-source custom call this
# machine only has a stand-in for; the sampler runs in the CPU suite instead.


@dataclass(frozen=True)
class Graph:
    config: str  # a `harness.model_config` name
    tag: str
    tp: int = 1
    seq_len: int = 64
    batch: int = 1
    dtype: torch.dtype = torch.float32
    bucket_rank: int = 0
    neuron: dict[str, Any] = field(default_factory=dict)


GRAPHS: dict[str, Graph] = {
    "tiny-cte-tp1": Graph("tiny", CTE),
    "tiny-tkg-tp1": Graph("tiny", TKG),
    "tiny-cte-tp2": Graph("tiny", CTE, tp=2),
    "tiny-tkg-tp2": Graph("tiny", TKG, tp=2),
    "v2-lite-like-cte-tp2-bs2": Graph("v2-lite-like", CTE, tp=2, batch=2),
    "v2-lite-like-tkg-tp2-bs2": Graph("v2-lite-like", TKG, tp=2, batch=2),
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
}


def build_app(graph: Graph) -> Any:
    """The application object as users build it (not `to_cpu()`: the builder constructs the traced modules)."""
    import harness

    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig, NeuronDsv3ForCausalLM

    neuron_config = Dsv3NeuronConfig(
        tp_degree=graph.tp,
        batch_size=graph.batch,
        seq_len=graph.seq_len,
        max_context_length=graph.seq_len,
        torch_dtype=graph.dtype,
        **graph.neuron,
    )
    config = Dsv3InferenceConfig.from_model_config(harness.model_config(graph.config), neuron_config)
    return NeuronDsv3ForCausalLM("unused-no-weights-are-loaded", config)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_traces_to_hlo_without_host_sync_or_fallback(name: str) -> None:
    import hlo_trace

    graph = GRAPHS[name]
    traced = hlo_trace.trace_submodel(build_app(graph), graph.tag, graph.bucket_rank)
    if os.environ.get("DSV3_TRACE_DUMP"):  # keep the HLO text to read
        Path(os.environ["DSV3_TRACE_DUMP"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["DSV3_TRACE_DUMP"]) / f"{name}.hlo.txt").write_text(traced.hlo)
    assert "ENTRY" in traced.hlo
    assert traced.count("dot") > 0, "nothing was lowered"
    assert traced.host_syncs == 0, f"{traced.host_syncs} host syncs inside the {graph.tag} forward"
    assert traced.fallbacks == {}, f"aten fallbacks: {traced.fallbacks}"
    if graph.tp > 1:
        assert traced.count("all-reduce") > 0, "a tp > 1 graph without an all-reduce is not sharded"
    print(f"{name}: largest intermediate {traced.largest_intermediate()}")


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

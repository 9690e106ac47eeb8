"""The plain model traced through torch_xla on a CPU (the Neuron compile route's tracing half, see
docs or the shared XLA_TRACE notes): prefill and 16 greedy decode steps of `tiny` and a V2-Lite-like
config on the XLA device.

Must hold: no `_local_scalar_dense` (a host sync) and no `aten::` CPU fallback inside the model's
forward; decode steps 2-16 compile nothing new (`UncachedCompile` unchanged after step 1); logits within
1e-5 of the eager CPU model (fp32, same weights; XLA:CPU's matmuls sum in another order, measured ~1e-6).
The XLA model is fed the eager run's greedy tokens, so a near-tie in argmax cannot desynchronize them.

Runs in `nox -s xla_trace` (torch 2.9 + torch_xla 2.9, the Neuron SDK 2.28 pin); skips elsewhere.
"""

from __future__ import annotations

import copy

import pytest
import torch

# Import torch_xla before anything that might install Neuron stand-ins (its __init__ probes libneuronxla).
xla = pytest.importorskip("torch_xla", reason="torch_xla is not installed (run `nox -s xla_trace`)")
metrics = pytest.importorskip("torch_xla.debug.metrics")

from dsv3_config import ModelConfig, preset  # noqa: E402
from dsv3_model.causal_lm import DeepseekForCausalLM  # noqa: E402
from dsv3_model.random_init import init_random_weights  # noqa: E402
from dsv3_testing.configs import v2_lite_like  # noqa: E402

TOL = 1e-5
STEPS = 16
PROMPTS = ([3, 17, 5, 9, 11, 2, 7], [4, 8, 15, 16])
CONFIGS: dict[str, ModelConfig] = {
    "tiny": preset("tiny"),
    "v2-lite-like": v2_lite_like(),
}


def padded() -> tuple[torch.Tensor, torch.Tensor]:
    lengths_B = torch.tensor([len(p) for p in PROMPTS])
    ids_BP = torch.zeros(len(PROMPTS), int(lengths_B.max()), dtype=torch.int64)
    for row, prompt in enumerate(PROMPTS):
        ids_BP[row, : len(prompt)] = torch.tensor(prompt)
    return ids_BP, lengths_B


def eager_run(model: DeepseekForCausalLM) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """CPU reference: last-prompt-token logits, then STEPS greedy steps; (logits per call, tokens fed)."""
    ids_BP, lengths_B = padded()
    caches = model.new_cache(len(PROMPTS), ids_BP.shape[1] + STEPS)
    logits_BPV = model(ids_BP, torch.arange(ids_BP.shape[1]).expand_as(ids_BP), caches, lengths_B)
    logits = [logits_BPV[torch.arange(len(PROMPTS)), lengths_B - 1]]
    fed: list[torch.Tensor] = []
    for step in range(STEPS):
        next_B = logits[-1].argmax(dim=-1)
        fed.append(next_B)
        positions_B1 = (lengths_B + step)[:, None]
        logits.append(model(next_B[:, None], positions_B1, caches, torch.ones_like(lengths_B))[:, 0])
    return logits, fed


def fallbacks() -> dict[str, int]:
    return {name: metrics.counter_value(name) for name in metrics.counter_names() if name.startswith("aten::")}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_prefill_and_decode_trace_clean_and_compile_once(name: str) -> None:
    device = xla.device()
    model = DeepseekForCausalLM(CONFIGS[name]).eval()
    init_random_weights(model, seed=3)
    want, fed = eager_run(model)
    model_x = copy.deepcopy(model).to(device)
    ids_BP, lengths_B = padded()
    caches = model_x.new_cache(len(PROMPTS), ids_BP.shape[1] + STEPS)
    xla.sync()
    metrics.clear_all()

    positions_BP = torch.arange(ids_BP.shape[1]).expand_as(ids_BP)
    logits_BPV = model_x(ids_BP.to(device), positions_BP.to(device), caches, lengths_B.to(device))
    got = [logits_BPV[torch.arange(len(PROMPTS), device=device), lengths_B.to(device) - 1]]
    xla.sync()
    compiles = []
    for step in range(STEPS):
        positions_B1 = (lengths_B + step)[:, None].to(device)
        got.append(model_x(fed[step][:, None].to(device), positions_B1, caches, None)[:, 0])
        xla.sync()
        compiles.append(metrics.counter_value("UncachedCompile") or 0)
    assert not metrics.counter_value("aten::_local_scalar_dense"), "a host sync inside the forward"
    assert not fallbacks(), f"CPU fallbacks: {fallbacks()}"
    assert compiles[0] > 0  # the counters do count: decode step 1 compiled its graph
    assert compiles[1:] == [compiles[0]] * (STEPS - 1), f"uncached compiles after each decode step: {compiles}"
    got_cpu = torch.stack([g.cpu() for g in got])
    assert float(torch.stack(want).abs().max()) > 0.1  # non-trivial logits
    torch.testing.assert_close(got_cpu, torch.stack(want), rtol=0, atol=TOL)

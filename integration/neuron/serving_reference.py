"""Test support: what transformers (4.57, fp32) says a served request should return, for the serving suites
(test_serving_cpu.py in CPU mode, test_neuron_device.py on a Neuron host).

Greedy is the argmax of the logits at every step (transformers' `generate` with `min_new_tokens` would
instead suppress the EOS id, which the served model does not).

Shape legend: S prompt tokens, N generated tokens, V vocab.
"""

from __future__ import annotations

from typing import Any

import serving_driver
import torch


def hf_logits_along(hf: Any, prompt_S: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """transformers' logits [N, V] for each of `tokens` given the prompt and the tokens before it (one pass)."""
    ids_1T = torch.cat([prompt_S, torch.tensor(tokens[:-1], dtype=prompt_S.dtype)])[None]
    with torch.no_grad():
        return hf(ids_1T).logits[0, prompt_S.shape[0] - 1 :].double()


def hf_greedy(hf: Any, prompt_S: torch.Tensor, new_tokens: int) -> list[int]:
    """transformers alone on one prompt, greedy (argmax at every step, with its KV cache)."""
    tokens: list[int] = []
    with torch.no_grad():
        out = hf(prompt_S[None], use_cache=True)
        for _ in range(new_tokens):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = hf(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens


def allowed_tokens(logits_V: torch.Tensor, top_k: int, top_p: float, temperature: float) -> set[int]:
    """Tokens NxDI's dynamic sampler can return for these logits (`modules/generation/sampling.py:395-433`):
    the `top_k` best, divided by the temperature, then only those whose sorted cumulative probability is
    <= top_p (the first always kept)."""
    values, indices = logits_V.double().sort(descending=True)
    values, indices = values[:top_k] / temperature, indices[:top_k]
    cumulative = values.softmax(-1).cumsum(-1)
    keep = (cumulative <= top_p + 1e-6) | (torch.arange(top_k) == 0)
    return set(indices[keep].tolist())


def assert_plugin_serving(hf: Any, requests: list[serving_driver.Request], outcome: dict[str, Any]) -> None:
    """Greedy rows (top_k 1) equal transformers alone; sampled rows only return tokens the dynamic sampler
    may pick from transformers' logits for the same prefix."""
    for index, (request, got) in enumerate(zip(requests, outcome["requests"], strict=True)):
        assert len(got["tokens"]) == request.new_tokens
        top_k, top_p, temperature = request.sampling
        if top_k == 1:
            assert got["tokens"] == hf_greedy(hf, request.prompt, request.new_tokens), f"request {index}"
            continue
        expected_NV = hf_logits_along(hf, request.prompt, got["tokens"])
        for step, (token, logits_V) in enumerate(zip(got["tokens"], expected_NV, strict=True)):
            assert token in allowed_tokens(logits_V, int(top_k), top_p, temperature), f"request {index} step {step}"

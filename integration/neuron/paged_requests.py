"""Test support: requests driven through `NeuronDsv3ForCausalLM` with the block KV cache the way vLLM's
Neuron runner drives them under prefix caching (vllm-neuron `worker/neuronx_distributed_model_runner.py`,
a5ef7c8): a prefill passes the whole prompt, its positions, `slot_mapping` for the tokens from
`computed_context_lens` on (padded with -1 to the model length, :739-763, :869-873), the request's
`block_table` (padded with block 0, :80-81, :744-752) and `full_context_lens`; a decode step passes one
token, its position and its slot (:798-832). Which blocks a request owns is the test's choice, as vLLM's
block manager's is: sharing a prefix means naming the same blocks.

Shape legend: B batch (1), L tokens so far, V vocab, M model length, N blocks per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PagedLayout:
    """Block size, blocks per request table, and the model length vLLM pads slot mappings to."""

    block_size: int
    max_model_len: int

    @property
    def blocks_per_request(self) -> int:
        return self.max_model_len // self.block_size

    def slots(self, blocks: list[int], start: int, end: int) -> list[int]:
        return [blocks[i // self.block_size] * self.block_size + i % self.block_size for i in range(start, end)]

    def prefill_slots_1M(self, blocks: list[int], start: int, end: int) -> torch.Tensor:
        """A prefill's `slot_mapping`: the slots of tokens `start..end`, padded with -1 to the model length."""
        slots = self.slots(blocks, start, end)
        return torch.tensor([slots + [-1] * (self.max_model_len - len(slots))])

    def table_1N(self, blocks: list[int]) -> torch.Tensor:
        return torch.tensor([blocks + [0] * (self.blocks_per_request - len(blocks))])


def prefill(model: Any, layout: PagedLayout, ids_1L: torch.Tensor, blocks: list[int], computed: int) -> torch.Tensor:
    """Logits [1, V] of the last prompt token; the first `computed` tokens are already in `blocks`."""
    length = ids_1L.shape[1]
    with torch.no_grad():
        out = model(
            ids_1L,
            position_ids=torch.arange(length)[None],
            seq_ids=torch.tensor([0], dtype=torch.int32),
            slot_mapping=layout.prefill_slots_1M(blocks, computed, length),
            block_table=layout.table_1N(blocks),
            full_context_lens=torch.tensor([[length]]),
            computed_context_lens=torch.tensor([[computed]]),
        )
    return out.logits[:, -1].float()


def chunked_prefill(
    model: Any, layout: PagedLayout, ids_1L: torch.Tensor, blocks: list[int], chunk: int
) -> torch.Tensor:
    """The prompt prefilled `chunk` tokens per call, each call over the blocks the earlier chunks filled;
    logits [1, V] of its last token."""
    logits_1V = torch.empty(0)
    for start in range(0, ids_1L.shape[1], chunk):
        end = min(start + chunk, ids_1L.shape[1])
        logits_1V = prefill(model, layout, ids_1L[:, :end], blocks, start)
    return logits_1V


def greedy(
    model: Any, layout: PagedLayout, ids_1L: torch.Tensor, blocks: list[int], logits_1V: torch.Tensor, steps: int
) -> list[int]:
    """`steps` greedy tokens after a prefill whose last logits are `logits_1V`, one decode call per token."""
    tokens: list[int] = []
    position = ids_1L.shape[1]
    for _ in range(steps):
        token = int(logits_1V.argmax(-1))
        tokens.append(token)
        with torch.no_grad():
            out = model(
                torch.tensor([[token]]),
                position_ids=torch.tensor([[position]]),
                seq_ids=torch.tensor([0], dtype=torch.int32),
                slot_mapping=torch.tensor([layout.slots(blocks, position, position + 1)]),
                block_table=layout.table_1N(blocks),
                full_context_lens=torch.tensor([[position + 1]]),
                computed_context_lens=torch.tensor([[position]]),
            )
        logits_1V = out.logits[:, -1].float()
        position += 1
    return tokens


def context_tokens_counter(model: Any) -> list[int]:
    """A list that receives the token count of every context-encoding call (the bucket it was padded to)."""
    counts: list[int] = []

    def record(module: Any, args: tuple[Any, ...]) -> None:
        if args[0].shape[1] > 1:
            counts.append(int(args[0].shape[1]))

    model.context_encoding_model.model.register_forward_pre_hook(record)
    return counts

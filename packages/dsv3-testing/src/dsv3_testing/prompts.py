"""Seeded random prompts for the parity suites (same ids on every run and machine)."""

from __future__ import annotations

import torch


def random_prompt(vocab_size: int, length: int, seed: int) -> list[int]:
    """`length` token ids uniform in `[0, vocab_size)`, from a generator seeded with `seed`."""
    return torch.randint(0, vocab_size, (length,), generator=torch.Generator().manual_seed(seed)).tolist()

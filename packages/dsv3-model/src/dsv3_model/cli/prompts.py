"""Checks of a prompt against the model it is for, made from `config.json` before any weight is read.

`--prompt-ids` is already well formed (`options.prompt_ids`); here each id must fall inside the
vocabulary, and the longest prompt plus `--max-new-tokens` inside `max_position_embeddings`. Past that
limit the rotary embedding still computes positions, but the model was never trained there (transformers
only warns): `dsv3 generate` refuses unless `--allow-long` is given, and then warns on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dsv3_model.cli.errors import UsageError


def check_prompt_ids(prompts: Sequence[Sequence[int]], vocab_size: int, source: str) -> None:
    """Every id in 0..vocab_size-1; the message names `source` (the option) and the first bad id."""
    for row, prompt in enumerate(prompts, 1):
        for column, token in enumerate(prompt, 1):
            if not 0 <= token < vocab_size:
                where = f"id {column} of prompt {row}" if len(prompts) > 1 else f"id {column}"
                raise UsageError(f"{source}: {where} is {token}, outside the vocabulary 0..{vocab_size - 1}")


def check_positions(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, max_position_embeddings: int, *, allow_long: bool
) -> None:
    """Refuse (or with `allow_long` warn about) a run whose last position passes the model's limit."""
    longest = max(len(prompt) for prompt in prompts)
    if longest + max_new_tokens <= max_position_embeddings:
        return
    message = (
        f"prompt ({longest} tokens) + --max-new-tokens ({max_new_tokens}) = {longest + max_new_tokens} positions, "
        f"past the model's max_position_embeddings ({max_position_embeddings})"
    )
    if not allow_long:
        raise UsageError(f"{message}: lower --max-new-tokens, or pass --allow-long to run anyway")
    print(f"dsv3 generate: warning: {message}; running anyway (--allow-long)", file=sys.stderr)

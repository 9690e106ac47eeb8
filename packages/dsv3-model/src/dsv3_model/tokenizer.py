"""The tokenizer of a model directory, through transformers' AutoTokenizer when the directory has one.

`has_tokenizer` needs no import of transformers, so `dsv3 generate --prompt` can refuse a directory
without one before anything heavy is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).exists() for name in TOKENIZER_FILES)


def load_tokenizer(model_dir: Path) -> Any | None:
    """`AutoTokenizer.from_pretrained(model_dir)`, or None when the directory ships no tokenizer."""
    if not has_tokenizer(model_dir):
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ImportError("text prompts need transformers: pip install 'dsv3-model[hf]'") from err
    return AutoTokenizer.from_pretrained(model_dir)

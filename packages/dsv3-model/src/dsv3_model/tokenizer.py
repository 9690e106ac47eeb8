"""The tokenizer of a model directory, through transformers' AutoTokenizer when the directory has one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_tokenizer(model_dir: Path) -> Any | None:
    """`AutoTokenizer.from_pretrained(model_dir)`, or None when the directory ships no tokenizer."""
    if not any((model_dir / name).exists() for name in TOKENIZER_FILES):
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ImportError("text prompts need transformers: pip install 'dsv3-model[hf]'") from err
    return AutoTokenizer.from_pretrained(model_dir)

"""Reads from the checkpoint for a streamed run: whole tensors dequantized as `dsv3 convert` and
`load_causal_lm` do (one function, `loading.dequantizing_source`), embedding rows alone, and a count of
the bytes read from the files (what the summary and the speed benchmark report).

Legend: U distinct token ids, D hidden size.
"""

from __future__ import annotations

from functools import partial

import torch

from dsv3_config import ModelConfig
from dsv3_model.loading import dequantizing_source
from dsv3_weights.fp8 import dequantize_fp8_slice
from dsv3_weights.layout import scale_name
from dsv3_weights.reader import CheckpointReader


class CountingSource:
    """`get(name)`: the tensor (fp32 when dequantized, else as stored); `bytes_read` counts file bytes."""

    def __init__(self, reader: CheckpointReader, cfg: ModelConfig) -> None:
        self.reader = reader
        self.cfg = cfg
        self._get = dequantizing_source(reader, cfg)
        self.bytes_read = 0

    def __contains__(self, name: str) -> bool:
        return name in self.reader

    def get(self, name: str) -> torch.Tensor:
        scale = scale_name(name)
        self.bytes_read += self.reader.nbytes(name) + (self.reader.nbytes(scale) if scale in self.reader else 0)
        return self._get(name)

    def rows(self, name: str, ids: list[int]) -> torch.Tensor:
        """Rows `ids` of a 2-D tensor `[U, D]`, reading only those rows (and their scale blocks)."""
        scale = scale_name(name)
        if scale not in self.reader:
            self.bytes_read += len(ids) * self.reader.entry(name).row_bytes
            return torch.cat([self.reader.get_rows(name, i, i + 1) for i in ids])
        block = self._block(name)
        shape = self.reader.shape(name)
        read_w, read_s = partial(self.reader.get_slice, name), partial(self.reader.get_slice, scale)
        out = []
        for i in ids:
            start = i // block[0] * block[0]
            self.bytes_read += min(block[0], shape[0] - start) * self.reader.entry(name).row_bytes
            self.bytes_read += self.reader.entry(scale).row_bytes
            out.append(
                dequantize_fp8_slice(
                    read_w, read_s, (shape[0], shape[1]), block, slice(i, i + 1), slice(None), torch.float32
                )
            )
        return torch.cat(out)

    def _block(self, name: str) -> tuple[int, int]:
        quant = self.cfg.quantization_config
        if quant is None:
            raise ValueError(
                f"{self.reader.file_of(name)}: {name} has a scale but config.json has no quantization_config"
            )
        return quant.weight_block_size

"""`dsv3 generate`'s memory bound from the config alone, against hand-computed byte counts.

The parameter count itself is pinned against the model built on the meta device (test_model_inventory);
here only how bytes follow from it: every parameter at the dtype's width, or, FP8-resident, one byte each
except the embedding and lm_head (V x H each), which FP8 checkpoints keep unquantized: the embedding at the
dtype's width, an untied lm_head as stored (BF16: 2 bytes also in an fp32 model).
"""

from __future__ import annotations

from dsv3_config import count_params, preset
from dsv3_model.cli.resources import weight_bytes_lower_bound


def test_dequantized_weights_take_the_dtype_width_per_parameter() -> None:
    cfg = preset("tiny")
    total = count_params(cfg).total
    assert weight_bytes_lower_bound(cfg, "float32") == 4 * total
    assert weight_bytes_lower_bound(cfg, "bfloat16") == 2 * total


def test_fp8_resident_weights_take_one_byte_but_the_embedding_and_lm_head() -> None:
    cfg = preset("deepseek-v3")  # V 129280, H 7168, untied
    total = count_params(cfg).total
    dense = 2 * 129280 * 7168
    assert weight_bytes_lower_bound(cfg, "bfloat16", "fp8-resident") == total - dense + 2 * dense
    assert weight_bytes_lower_bound(cfg, "float32", "fp8-resident") == total - dense + (4 + 2) * 129280 * 7168
    tied = preset("tiny").replace(tie_word_embeddings=True)
    one = tied.vocab_size * tied.hidden_size
    assert weight_bytes_lower_bound(tied, "bfloat16", "fp8-resident") == count_params(tied).total + one
    assert weight_bytes_lower_bound(tied, "float32", "fp8-resident") == count_params(tied).total + 3 * one

"""dsv3-weights: read, dequantize, convert, shard, synthesize and verify DeepSeek-V3-family checkpoints
in bounded memory (see README.md)."""

from dsv3_weights.convert import MANIFEST_NAME, OUT_DTYPES, convert_checkpoint
from dsv3_weights.errors import CheckpointError
from dsv3_weights.fp8 import dequantize_fp8_blocks, dequantize_fp8_slice, quantize_fp8_blocks, scale_grid
from dsv3_weights.layout import TensorSpec, checkpoint_layout, scale_name, stored_tensors, tensor_specs
from dsv3_weights.progress import Summary
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.sharding import shard_tensor, split_ranges
from dsv3_weights.synthetic import make_checkpoint
from dsv3_weights.verify import check_checkpoint, verify_checkpoint

__all__ = [
    "MANIFEST_NAME",
    "OUT_DTYPES",
    "CheckpointError",
    "CheckpointReader",
    "Summary",
    "TensorSpec",
    "check_checkpoint",
    "checkpoint_layout",
    "convert_checkpoint",
    "dequantize_fp8_blocks",
    "dequantize_fp8_slice",
    "make_checkpoint",
    "quantize_fp8_blocks",
    "scale_grid",
    "scale_name",
    "shard_tensor",
    "split_ranges",
    "stored_tensors",
    "tensor_specs",
    "verify_checkpoint",
]

"""The parameter inventory: which tensors a DeepSeek-V3-family model holds, declared once as frozen data.

Every other statement of it is a view: the shard plans of dsv3-mla and dsv3-moe, the checkpoint layout
dsv3-weights reads and writes, the parameter counts, the planner's per-family bytes and the NxDI key map.
The module packages' constructors are checked against it (their `named_parameters()` on the meta device).
"""

from dsv3_config.inventory.attention import attention_tensors
from dsv3_config.inventory.mlp import expert_stacks, mlp_tensors, moe_tensors, swiglu_tensors
from dsv3_config.inventory.model import decoder_layer_tensors, model_tensors, mtp_extra_tensors, outer_tensors
from dsv3_config.inventory.records import ExpertStack, Family, StoredDtype, TensorDecl, per_expert, under, unstacked

__all__ = [
    "ExpertStack",
    "Family",
    "StoredDtype",
    "TensorDecl",
    "attention_tensors",
    "decoder_layer_tensors",
    "expert_stacks",
    "mlp_tensors",
    "model_tensors",
    "moe_tensors",
    "mtp_extra_tensors",
    "outer_tensors",
    "per_expert",
    "swiglu_tensors",
    "under",
    "unstacked",
]

"""The NxDI key map (`nxdi_checkpoint.key_map`, a view of the inventory) against our causal LM built on the
meta device: every tensor of the model (MTP aside) under its NxDI name, with NxD's renames written out here
by hand (docs/nxdi-contract.md section 8): the router under `mlp.router.`, the expert stacks under
`mlp.expert_mlps.mlp_op.` with their last two dims swapped. NxD's own key list is integration/neuron's check."""

from __future__ import annotations

import pytest
import torch

from dsv3_config import ModelConfig, preset
from dsv3_model.causal_lm import DeepseekForCausalLM
from dsv3_model.nxdi_checkpoint.key_map import nxdi_tensors
from dsv3_testing.configs import v2_lite_like

TINY = preset("tiny")
CASES = {
    "tiny": TINY,
    "attention_bias": TINY.replace(attention_bias=True),
    "v2_lite_like": v2_lite_like(),
    "no_shared_experts": TINY.replace(n_shared_experts=0),
}
RENAMED = {
    "mlp.gate.weight": ("mlp.router.linear_router.weight", False),
    "mlp.gate.e_score_correction_bias": ("mlp.router.e_score_correction_bias", False),
    "mlp.experts.gate_up_proj": ("mlp.expert_mlps.mlp_op.gate_up_proj.weight", True),
    "mlp.experts.down_proj": ("mlp.expert_mlps.mlp_op.down_proj.weight", True),
}


def nxdi_names_by_hand(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = DeepseekForCausalLM(cfg)
    out = {}
    for key, tensor in model.state_dict().items():
        key = key.removeprefix("model.")
        shape = tuple(tensor.shape)
        for ours, (theirs, transposed) in RENAMED.items():
            if key.endswith("." + ours):
                key = key.removesuffix(ours) + theirs
                shape = (shape[0], shape[2], shape[1]) if transposed else shape
        out[key] = shape
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_key_map_renames_our_model(name: str) -> None:
    cfg = CASES[name]
    assert {tensor.name: tensor.shape for tensor in nxdi_tensors(cfg)} == nxdi_names_by_hand(cfg)

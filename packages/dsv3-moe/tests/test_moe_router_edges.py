"""Router edge cases against transformers (branching on its version where 4.57 and 5.x differ) and the
fp32 precision contract.

The mask question (docs/numerics.md section 6): transformers 4.57 fills experts outside the kept groups with 0.0,
5.x (like DeepSeek's code and dsv3) with -inf. They choose differently exactly when a token has fewer than
`top_k` kept experts with a positive biased score `s'`: then 0.0 beats a kept expert.
"""

from __future__ import annotations

import pytest
import torch
from moe_cases import CONFIGS, build_moe, by_expert, random_hidden

from dsv3_config import ModelConfig
from dsv3_moe import load_hf_moe_state_dict
from dsv3_testing.hf_moe import hf_moe_block, hf_moe_route
from dsv3_testing.hf_reference import transformers_major


def biased_scores(block: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """s' = sigmoid(x W^T) + bias, the selection score, from transformers' own router tensors."""
    hidden_TH = hidden.reshape(-1, hidden.shape[-1]).float()
    return torch.sigmoid(hidden_TH @ block.gate.weight.float().T) + block.gate.e_score_correction_bias.float()


def top_groups(cfg: ModelConfig, choice_TE: torch.Tensor) -> torch.Tensor:
    """[T, topk_group] ids of the groups with the largest top-2 sums (the closed form of step 4-5)."""
    group_score_TG = choice_TE.view(choice_TE.shape[0], cfg.n_group, -1).topk(2, dim=-1).values.sum(-1)
    return group_score_TG.topk(cfg.topk_group, dim=-1).indices.sort(dim=-1).values


def compare_with_hf(cfg: ModelConfig, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hf = hf_moe_block(cfg, seed=3)
    if bias is not None:
        hf.gate.e_score_correction_bias.copy_(bias)
    ours = build_moe(cfg)
    load_hf_moe_state_dict(ours, hf.state_dict(), cfg)
    hidden = random_hidden(cfg, seed=4, shape=(4, 8))
    with torch.no_grad():
        hf_idx = by_expert(*hf_moe_route(hf, hidden))[0]
        our_idx = by_expert(*ours.gate(hidden))[0]
        return our_idx, hf_idx, biased_scores(hf, hidden)


def test_topk_equal_to_all_experts_of_the_kept_groups() -> None:
    cfg = CONFIGS["topk_fills_groups"]  # 2 kept groups x 4 experts = top-8
    our_idx, hf_idx, choice_TE = compare_with_hf(cfg, None)
    groups_TG = top_groups(cfg, choice_TE)
    per_group = cfg.experts_per_group
    expected = (groups_TG.unsqueeze(-1) * per_group + torch.arange(per_group)).reshape(len(groups_TG), -1)
    assert torch.equal(our_idx, expected)  # exactly the union of the two best groups, every token
    kept_positive = (choice_TE.gather(1, expected) > 0).all(dim=1)
    assert not bool(kept_positive.all())  # the draw has tokens where 4.57 and 5.x disagree
    if transformers_major() >= 5:  # -inf mask: identical everywhere
        assert torch.equal(hf_idx, our_idx)
    else:  # 0.0 mask: identical exactly where every kept expert has s' > 0
        agree = (hf_idx == our_idx).all(dim=1)
        assert torch.equal(agree, kept_positive)


def test_all_negative_biases() -> None:
    cfg = CONFIGS["tiny"]
    our_idx, hf_idx, choice_TE = compare_with_hf(cfg, torch.full((cfg.n_routed_experts,), -1.5))
    assert bool((choice_TE < 0).all())
    our_groups = (our_idx // cfg.experts_per_group).sort(dim=-1).values
    allowed = top_groups(cfg, choice_TE)
    assert bool((our_groups.unsqueeze(-1) == allowed.unsqueeze(1)).any(-1).all())  # only kept groups
    if transformers_major() >= 5:
        assert torch.equal(hf_idx, our_idx)
    else:  # with every s' < 0 the 0.0-masked experts win: transformers 4.57 picks only outside the kept groups
        hf_groups = hf_idx // cfg.experts_per_group
        assert not bool((hf_groups.unsqueeze(-1) == allowed.unsqueeze(1)).any(-1).any())


def test_groups_of_one_expert_are_refused_like_transformers() -> None:
    """noaux_tc scores a group by its top-2; with one expert per group transformers fails inside
    `topk(2)` (RuntimeError, both versions) and so does DeepSeek's code; dsv3 refuses the config up front."""
    cfg = CONFIGS["tiny"].replace(n_group=16, topk_group=4)
    with pytest.raises(ValueError, match="top-2"):
        build_moe(cfg)
    hf = hf_moe_block(cfg, seed=0)
    with pytest.raises(RuntimeError), torch.no_grad():
        hf(random_hidden(cfg, seed=0))


def test_router_stays_fp32_under_dtype_conversion() -> None:
    cfg = CONFIGS["tiny"]
    moe = build_moe(cfg)
    with torch.no_grad():
        moe.gate.weight.normal_(0.0, 1.0)
        moe.gate.e_score_correction_bias.normal_(0.0, 0.1)
    weight, bias = moe.gate.weight.detach().clone(), moe.gate.e_score_correction_bias.clone()
    moe.to(torch.bfloat16)
    assert moe.experts.gate_up_proj.dtype == torch.bfloat16
    assert moe.gate.weight.dtype == torch.float32
    assert moe.gate.e_score_correction_bias.dtype == torch.float32
    assert torch.equal(moe.gate.weight, weight)
    assert torch.equal(moe.gate.e_score_correction_bias, bias)
    moe.half().float()
    assert torch.equal(moe.gate.weight, weight)
    assert isinstance(moe.gate.weight, torch.nn.Parameter)
    assert "e_score_correction_bias" in dict(moe.gate.named_buffers())
    # a bf16 state dict loads into the fp32 tensors exactly (bf16 -> fp32 is exact)
    rounded = {k: v.to(torch.bfloat16) for k, v in moe.gate.state_dict().items()}
    moe.gate.load_state_dict(rounded)
    assert torch.equal(moe.gate.weight, rounded["weight"].float())
    _, weight_TK = moe.gate(random_hidden(cfg, seed=0).to(torch.bfloat16))
    assert weight_TK.dtype == torch.float32

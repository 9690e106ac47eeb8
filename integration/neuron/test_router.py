"""The router keeps fp32 through top-k: on bf16 activations it picks exactly the experts of
transformers' fp32 `DeepseekV3TopkRouter` and matches its weights; NxD's `GroupLimitedRouter` (the
contrib port's base, which casts the affinities to bf16 before bias and top-k) picks differently on
the same input, so this test fails for a router with that cast.

The weight is BF16-representable, as a checkpoint's `gate.weight` is (BF16), so holding it in BF16 (the
adapter's default, the model dtype) or fp32 gives the same fp32 logits. Split by expert over tp ranks, the
gathered logits are checked in the tp=2/tp=4 model suites (test_causal_lm_cpu, test_rank_bytes)."""

from __future__ import annotations

import harness
import pytest
import torch

TOKENS = 4096


@pytest.fixture(autouse=True)
def _parallel_state() -> None:
    harness.init_cpu_parallel_state()  # NxD routers query the expert-parallel group at construction


def _inputs(cfg):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(3)
    hidden_TD = torch.randn(TOKENS, cfg.hidden_size, generator=generator).to(torch.bfloat16)
    weight_ED = (torch.randn(cfg.n_routed_experts, cfg.hidden_size, generator=generator) * 0.05).bfloat16().float()
    bias_E = torch.randn(cfg.n_routed_experts, generator=generator) * 0.01
    return hidden_TD, weight_ED, bias_E


def _hf_router(cfg, weight_ED, bias_E):  # type: ignore[no-untyped-def]
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    from dsv3_testing.hf_reference import hf_config

    router = DeepseekV3TopkRouter(hf_config(cfg))
    with torch.no_grad():
        router.weight.copy_(weight_ED)
        router.e_score_correction_bias.copy_(bias_E)
    return router


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_router_selects_in_fp32_like_transformers(dtype: torch.dtype) -> None:
    from dsv3_model.neuron import Dsv3Router

    cfg = harness.model_config("tiny")
    hidden_TD, weight_ED, bias_E = _inputs(cfg)
    ours = Dsv3Router(cfg, dtype=dtype)
    assert ours.linear_router.weight.dtype == dtype
    with torch.no_grad():
        ours.linear_router.weight.copy_(weight_ED)
        ours.e_score_correction_bias.copy_(bias_E)
        _, affinities_TE, idx_TK = ours(hidden_TD)
        ref_idx_TK, ref_weights_TK = _hf_router(cfg, weight_ED, bias_E)(hidden_TD)
    assert torch.equal(idx_TK.sort(dim=-1).values, ref_idx_TK.sort(dim=-1).values)
    assert affinities_TE.dtype == torch.float32
    # Same fp32 ops on the same values: equal up to summation order (1 ulp of ~0.6).
    torch.testing.assert_close(affinities_TE.gather(1, ref_idx_TK), ref_weights_TK, atol=1e-6, rtol=0)


def test_a_bf16_cast_before_top_k_changes_the_choice() -> None:
    from neuronx_distributed.modules.moe.routing import GroupLimitedRouter

    cfg = harness.model_config("tiny")
    hidden_TD, weight_ED, bias_E = _inputs(cfg)
    nxd = GroupLimitedRouter(
        num_experts=cfg.n_routed_experts,
        top_k=cfg.num_experts_per_tok,
        hidden_size=cfg.hidden_size,
        n_group=cfg.n_group,
        topk_group=cfg.topk_group,
    )
    nxd.e_score_correction_bias = torch.nn.Parameter(bias_E.clone(), requires_grad=False)
    with torch.no_grad():
        nxd.linear_router.weight.copy_(weight_ED)
        _, _, nxd_idx_TK = nxd(hidden_TD)
        ref_idx_TK, _ = _hf_router(cfg, weight_ED, bias_E)(hidden_TD)
    differing = (nxd_idx_TK.sort(dim=-1).values != ref_idx_TK.sort(dim=-1).values).any(dim=-1)
    assert int(differing.sum()) > 0

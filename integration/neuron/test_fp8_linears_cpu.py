"""Weights `fp8` (NxD CPU mode): the routed experts as with `fp8-experts`, plus the other block-quantized linears
(`dsv3_config.inventory.fp8_linears`) in NxD's blockwise `QuantizedColumnParallel` / `QuantizedRowParallel`,
reproducing transformers run on the dequantized checkpoint.

Bound: 1e-4 on the last-token logits, as for FP8 experts (test_fp8_experts_cpu) and without FP8
(test_causal_lm_cpu), for the same reason: the only numeric change is the rescaling into Neuron's range
(`nxdi_checkpoint/fp8_experts.py`: weights halved, scales doubled; exact except stored values |q| < 2^-5, each
moved by at most 2^-9 s, 4.4e-6 of its block's largest weight), and NxD's `blockwise_scale_dequantize` computes
`q * scale` in fp32 per device block, the checkpoint's own `q * scale_inv` per block (each device block lies in
one checkpoint block), before the fp32 matmul. Measured 2026-12-01: tiny tp=1 1.2e-7; tp=2 tiny 1.2e-7,
V2-Lite-like 9.7e-8. Greedy tokens must be identical over 32 steps.
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import torch

from dsv3_model.nxdi_checkpoint.fp8_experts import NEURON_FP8_MAX

PARITY_TOKENS = 32


def test_fp8_weights_build_nxd_quantized_linears(tmp_path: Path) -> None:
    """tiny at tp=1 (32x32 checkpoint blocks): every linear the record names is NxD's blockwise FP8 layer with one
    scale per device block; kv_b_proj, router, embedding and lm_head are as with BF16."""
    from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear, ParallelEmbedding
    from neuronx_distributed.quantization.quantization_config import QuantizationType
    from neuronx_distributed.quantization.quantization_layers import QuantizedColumnParallel, QuantizedRowParallel

    cfg = harness.model_config("tiny")
    harness.save_fp8_checkpoint(cfg, tmp_path)
    module = harness.build_neuron_model(tmp_path, tp_degree=1, dsv3_weights="fp8").context_encoding_model.model
    dense, moe = module.layers[0], module.layers[1]
    # (layer, class, scale grid by hand: [out / gcd(32, out), in / gcd(32, in)])
    expected = [
        (dense.self_attn.q_a_proj, QuantizedRowParallel, (48 // 16, 64 // 32)),
        (dense.self_attn.q_b_proj, QuantizedColumnParallel, (96 // 32, 48 // 16)),
        (dense.self_attn.kv_a_proj_with_mqa, QuantizedRowParallel, (40 // 8, 64 // 32)),
        (dense.self_attn.o_proj, QuantizedRowParallel, (64 // 32, 48 // 16)),
        (dense.mlp.gate_proj, QuantizedColumnParallel, (160 // 32, 64 // 32)),
        (dense.mlp.down_proj, QuantizedRowParallel, (64 // 32, 160 // 32)),
        (moe.mlp.shared_experts.up_proj, QuantizedColumnParallel, (48 // 16, 64 // 32)),
        (moe.mlp.shared_experts.down_proj, QuantizedRowParallel, (64 // 32, 48 // 16)),
    ]
    for layer, cls, scale_shape in expected:
        assert type(layer) is cls
        assert layer.quantization_type == QuantizationType.BLOCKWISE_SYMMETRIC
        assert layer.weight.dtype == torch.float8_e4m3fn
        assert float(layer.weight.float().abs().max()) <= NEURON_FP8_MAX  # loaded, in Neuron's range
        assert (layer.scale.dtype, tuple(layer.scale.shape)) == (torch.float32, scale_shape)
    assert type(moe.self_attn.kv_b_proj) is ColumnParallelLinear
    assert moe.self_attn.kv_b_proj.weight.dtype == torch.float32
    assert type(moe.mlp.router.linear_router) is ColumnParallelLinear
    assert type(module.embed_tokens) is ParallelEmbedding
    assert type(module.lm_head) is ColumnParallelLinear
    assert moe.mlp.expert_mlps.mlp_op.gate_up_proj.weight.dtype == torch.float8_e4m3fn


def test_weight_options_refused_with_one_line(tmp_path: Path) -> None:
    from dsv3_config import ConfigError

    harness.save_hf_checkpoint(harness.model_config("tiny").replace(quantization_config=None), tmp_path / "bf16")
    with pytest.raises(ConfigError, match=r"dsv3_weights='fp8' needs an FP8 checkpoint"):
        harness.inference_config(tmp_path / "bf16", dsv3_weights="fp8")
    with pytest.raises(ConfigError, match=r"^Dsv3NeuronConfig: dsv3_weights='fp4'; known: bf16, fp8-experts, fp8$"):
        harness.inference_config(tmp_path / "bf16", dsv3_weights="fp4")
    with pytest.raises(ConfigError, match=r"^Dsv3NeuronConfig: dsv3_expert_weights='fp4'; known: "):
        harness.inference_config(tmp_path / "bf16", dsv3_expert_weights="fp4")
    with pytest.raises(ConfigError, match=r"disagree; dsv3_expert_weights is dsv3_weights' earlier name"):
        harness.inference_config(tmp_path / "bf16", dsv3_weights="fp8", dsv3_expert_weights="bf16")


def test_fp8_weights_saved_and_reloaded(tmp_path: Path) -> None:
    """`fp8` is stored as `dsv3_weights` (the earlier name still loads), so a reloaded config builds the same."""
    from dsv3_model.neuron import Dsv3InferenceConfig

    harness.save_fp8_checkpoint(harness.model_config("tiny"), tmp_path)
    config = harness.inference_config(tmp_path, dsv3_expert_weights="fp8")
    assert (config.neuron_config.dsv3_weights, config.fp8_linears()) == ("fp8", True)
    config.save(str(tmp_path / "saved"))
    reloaded = Dsv3InferenceConfig.load(str(tmp_path / "saved"))
    assert (reloaded.neuron_config.dsv3_weights, reloaded.fp8_linears()) == ("fp8", True)
    assert reloaded.fp8_expert_grid() == config.fp8_expert_grid()
    assert not harness.inference_config(tmp_path).fp8_linears()  # the default stays fp8-experts


@pytest.mark.parametrize("name", ["tiny", "v2-lite-like-fp8"])
def test_tp2_fp8_weights_match_transformers(name: str, tmp_path: Path) -> None:
    cfg = harness.model_config(name)
    checkpoint, out_file = tmp_path / "hf", tmp_path / "rank0.pt"
    hf = harness.save_fp8_checkpoint(cfg, checkpoint)
    args = ("--new-tokens", str(PARITY_TOKENS), "--weights", "fp8")
    harness.torchrun("tp_worker.py", 0, name, str(checkpoint), str(out_file), *args)

    ids_BS = harness.prompt(cfg)
    with torch.no_grad():
        expected_BV = hf(ids_BS).logits[:, -1]
    expected_BS = hf.generate(ids_BS, max_new_tokens=PARITY_TOKENS, min_new_tokens=PARITY_TOKENS, do_sample=False)
    rank0 = torch.load(out_file)
    assert (rank0["expert_dtype"], rank0["query_dtype"]) == (str(torch.float8_e4m3fn),) * 2
    torch.testing.assert_close(rank0["logits"], expected_BV, atol=1e-4, rtol=0)
    assert rank0["tokens"].tolist() == expected_BS.tolist()

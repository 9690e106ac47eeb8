"""Routed experts held in FP8 on the device (NxD CPU mode): NxD's quantized expert layers, in Neuron's e4m3
range, reproducing transformers run on the dequantized checkpoint.

Bound: 1e-4 on the last-token logits, as without FP8 (test_causal_lm_cpu: the same fp32 math in another
order), because the only numeric change FP8 experts add is the rescaling into Neuron's range
(`nxdi_checkpoint/fp8_experts.py`): weights halved, scales doubled, which is exact except for stored values
|q| < 2^-5 (subnormal after halving), each moved by at most 2^-9 s, at most 4.4e-6 of its block's largest
weight; the blockwise dequantization itself is the checkpoint's (`q * scale_inv` per block) in fp32.
Measured 2026-12-01: tiny at tp=1 9e-8 (BF16 experts 1.2e-7); at tp=2 tiny 1.5e-7 (BF16 experts 8.9e-8),
V2-Lite-like 8.9e-8 (1.2e-7). Greedy tokens must be identical over 32 steps.
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import torch

from dsv3_model.nxdi_checkpoint.fp8_experts import NEURON_FP8_MAX

PARITY_TOKENS = 32


def _routed_experts(model: object) -> object:
    module = model.context_encoding_model.model  # type: ignore[attr-defined]
    return next(layer.mlp for layer in module.layers if layer.is_moe).expert_mlps.mlp_op


def test_fp8_checkpoint_builds_nxd_quantized_expert_layers(tmp_path: Path) -> None:
    from neuronx_distributed.modules.moe.moe_parallel_layers import ExpertFusedColumnParallelLinear
    from neuronx_distributed.quantization.quantization_config import QuantizationType
    from neuronx_distributed.quantization.quantization_layers import (
        QuantizedExpertFusedColumnParallel,
        QuantizedExpertFusedRowParallel,
    )

    cfg = harness.model_config("tiny")
    harness.save_fp8_checkpoint(cfg, tmp_path)
    experts = _routed_experts(harness.build_neuron_model(tmp_path, tp_degree=1))
    assert isinstance(experts.gate_up_proj, QuantizedExpertFusedColumnParallel)
    assert isinstance(experts.down_proj, QuantizedExpertFusedRowParallel)
    for layer in (experts.gate_up_proj, experts.down_proj):
        assert layer.quantization_type == QuantizationType.BLOCKWISE_SYMMETRIC
        assert layer.weight.dtype == torch.float8_e4m3fn
        assert layer.scale.dtype == torch.float32
        assert float(layer.weight.float().abs().max()) <= NEURON_FP8_MAX  # loaded, in Neuron's range
    # tiny: H 64, I 48, 32x32 checkpoint blocks; tp=1: gate_up (in 32, out gcd(32, 48) = 16), down (16, 32)
    assert tuple(experts.gate_up_proj.scale.shape) == (cfg.n_routed_experts, 64 // 32, 96 // 16)
    assert tuple(experts.down_proj.scale.shape) == (cfg.n_routed_experts, 48 // 16, 64 // 32)
    bf16 = _routed_experts(harness.build_neuron_model(tmp_path, tp_degree=1, dsv3_expert_weights="bf16"))
    assert type(bf16.gate_up_proj) is ExpertFusedColumnParallelLinear


def test_fp8_experts_refused_where_they_cannot_run(tmp_path: Path) -> None:
    from dsv3_config import ConfigError

    harness.save_hf_checkpoint(harness.model_config("tiny").replace(quantization_config=None), tmp_path)
    with pytest.raises(ConfigError, match="dsv3_weights='fp8-experts' needs an FP8 checkpoint"):
        harness.inference_config(tmp_path, dsv3_expert_weights="fp8-experts")
    with pytest.raises(ConfigError, match="dsv3_expert_weights='fp16'; known: bf16, fp8-experts, fp8"):
        harness.inference_config(tmp_path, dsv3_expert_weights="fp16")


@pytest.mark.parametrize("name", ["tiny", "v2-lite-like-fp8"])
def test_tp2_fp8_experts_match_transformers(name: str, tmp_path: Path) -> None:
    cfg = harness.model_config(name)
    checkpoint, out_file = tmp_path / "hf", tmp_path / "rank0.pt"
    hf = harness.save_fp8_checkpoint(cfg, checkpoint)
    harness.torchrun("tp_worker.py", 0, name, str(checkpoint), str(out_file), "--new-tokens", str(PARITY_TOKENS))

    ids_BS = harness.prompt(cfg)
    with torch.no_grad():
        expected_BV = hf(ids_BS).logits[:, -1]
    expected_BS = hf.generate(ids_BS, max_new_tokens=PARITY_TOKENS, min_new_tokens=PARITY_TOKENS, do_sample=False)
    rank0 = torch.load(out_file)
    assert rank0["expert_dtype"] == str(torch.float8_e4m3fn)
    torch.testing.assert_close(rank0["logits"], expected_BV, atol=1e-4, rtol=0)
    assert rank0["tokens"].tolist() == expected_BS.tolist()


def test_expert_format_resolved_once_and_saved(tmp_path: Path) -> None:
    """The default is resolved against the checkpoint and stored, so a reloaded `neuron_config.json` builds the
    same layers: FP8 at fp32 on CPU; BF16 experts by default in CPU mode's BF16, where `to_cpu()` would cast FP8
    (asking for FP8 there is refused); NxDI's own `quantized` is refused with the option to use."""
    from dsv3_config import ConfigError
    from dsv3_model.neuron import Dsv3InferenceConfig

    harness.save_fp8_checkpoint(harness.model_config("tiny"), tmp_path)
    config = harness.inference_config(tmp_path)
    assert config.neuron_config.dsv3_weights == "fp8-experts"
    config.save(str(tmp_path / "saved"))
    assert Dsv3InferenceConfig.load(str(tmp_path / "saved")).fp8_expert_grid() == config.fp8_expert_grid()
    assert harness.inference_config(tmp_path, dtype=torch.bfloat16).neuron_config.dsv3_weights == "bf16"
    with pytest.raises(ConfigError, match=r"with on_cpu and torch_dtype=torch\.bfloat16"):
        harness.inference_config(tmp_path, dtype=torch.bfloat16, dsv3_expert_weights="fp8-experts")
    with pytest.raises(ValueError, match=r"\['quantized'\] \(FP8 weights: dsv3_weights='fp8-experts' or 'fp8'\)"):
        harness.inference_config(tmp_path, quantized=True, quantized_checkpoints_path=str(tmp_path))


@pytest.mark.parametrize("expert_weights", ["fp8-experts", "fp8", "bf16"])
def test_fp8_experts_compile_as_neuron_e4m3(expert_weights: str, tmp_path: Path) -> None:
    """Each submodel's neuronx-cc arguments hold NxDI's one hlo2tensorizer option, with
    `--experimental-unsafe-fp8e4m3fn-as-fp8e4m3` in it exactly when the experts are FP8 (the flag NxDI itself
    adds under `quantized` + f8e4m3, `models/model_wrapper.py:148-157`)."""
    from dsv3_model.neuron import NeuronDsv3ForCausalLM

    harness.save_fp8_checkpoint(harness.model_config("tiny"), tmp_path)
    app = NeuronDsv3ForCausalLM(str(tmp_path), harness.inference_config(tmp_path, dsv3_expert_weights=expert_weights))
    assert len(app.models) == 2
    for wrapper in app.models:
        args = wrapper.compiler_args
        assert args.count("--internal-hlo2tensorizer-options=") == 1, args
        option = args.split("--internal-hlo2tensorizer-options='")[1].split("'")[0]
        assert ("--experimental-unsafe-fp8e4m3fn-as-fp8e4m3" in option) == (expert_weights != "bf16")
        assert "--verify-hlo=true" in option


def test_fp8_experts_through_nxd_blockwise_prefill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt of 160 tokens (x top-4 = 640 >= NxD's 512-token block) takes NxD's blockwise context-encoding
    path (`forward_blockwise` -> `torch_blockwise_matmul_inference` without NKI), which indexes the FP8 stacks
    per block; same bound (1e-4; measured 1.4e-7)."""
    from neuronx_distributed.modules.moe.expert_mlps_v2 import ExpertMLPsV2

    calls = []
    blockwise = ExpertMLPsV2.torch_blockwise_matmul_inference

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return blockwise(*args, **kwargs)

    monkeypatch.setattr(ExpertMLPsV2, "torch_blockwise_matmul_inference", counted)  # NxD's own, counted
    cfg = harness.model_config("tiny")
    hf = harness.save_fp8_checkpoint(cfg, tmp_path)
    ids_BS = harness.long_prompt(cfg, 160)
    logits_BV = harness.prefill_last_logits(harness.build_neuron_model(tmp_path, tp_degree=1, seq_len=256), ids_BS)
    with torch.no_grad():
        expected_BV = hf(ids_BS).logits[:, -1]
    assert len(calls) == cfg.num_moe_layers
    torch.testing.assert_close(logits_BV, expected_BV, atol=1e-4, rtol=0)

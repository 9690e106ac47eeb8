"""Test support for the NxDI CPU suite: an HF reference checkpoint on disk, the dsv3 NxDI model built
from it the way users build it (`load_pretrained_config` + `to_cpu()`), and greedy generation through
NxDI's own `HuggingFaceGenerationAdapter`. Imported only after conftest made NxDI importable.

Shape legend: B batch, S prompt tokens, V vocab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsv3_config import ModelConfig, preset
from dsv3_testing.hf_reference import hf_causal_lm

PROMPT_LEN = 11
NEW_TOKENS = 16


def model_config(name: str) -> ModelConfig:
    """The suite's configs: `tiny` (every V3 feature, FP8 blocks 32x32) and `v2-lite-like` (V2-Lite's structure:
    no q_lora, softmax greedy routing without groups, 2 shared experts, YaRN with mscale 0.707, shrunk to tiny
    sizes; `v2-lite-like-fp8` adds FP8 blocks)."""
    if name == "tiny":
        return preset("tiny")
    if name == "v2-lite-like":
        return preset("deepseek-v2-lite").replace(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=96,
            moe_intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            n_routed_experts=8,
            num_experts_per_tok=2,
            kv_lora_rank=32,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            max_position_embeddings=1024,
            bos_token_id=0,
            eos_token_id=1,
        )
    if name == "v2-lite-like-fp8":  # the same, as an FP8 checkpoint (16x16 blocks: 2 per expert row at tp=2)
        return model_config("v2-lite-like").replace(
            quantization_config={"quant_method": "fp8", "weight_block_size": [16, 16]}
        )
    raise KeyError(f"unknown suite config {name!r}; known: tiny, v2-lite-like, v2-lite-like-fp8")


def prompt(cfg: ModelConfig, batch: int = 1, *, seed: int = 1) -> torch.Tensor:
    """Random prompt ids [B, PROMPT_LEN] avoiding the special ids 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, cfg.vocab_size, (batch, PROMPT_LEN), generator=generator)


def long_prompt(cfg: ModelConfig, length: int, *, seed: int = 5) -> torch.Tensor:
    """A seeded random prompt [1, length] avoiding the special ids 0 and 1 (long-prefill runs)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, cfg.vocab_size, (1, length), generator=generator)


def init_cpu_parallel_state() -> None:
    """World size 1, gloo, as `NeuronApplicationBase.to_cpu()` sets it up (NxDI `application_base.py:578-596`),
    for tests that build NxD modules without a model; idempotent and compatible with later `to_cpu()` calls."""
    import os

    from neuronx_distributed.parallel_layers import parallel_state

    os.environ["NXD_CPU_MODE"] = "1"
    if not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        torch.distributed.init_process_group(backend="gloo", world_size=1, rank=0)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, skip_collective_init=True)


def save_hf_checkpoint(cfg: ModelConfig, directory: Path, *, seed: int = 0) -> Any:
    """A random HF reference model (fp32, non-zero router bias), saved as safetensors; returns the model."""
    model = hf_causal_lm(cfg, seed=seed)
    model.save_pretrained(directory, safe_serialization=True)
    return model


def save_fp8_checkpoint(cfg: ModelConfig, directory: Path, *, seed: int = 0) -> Any:
    """A DeepSeek-style FP8 checkpoint (`float8_e4m3fn` weights + fp32 `weight_scale_inv` blocks, as
    dsv3-weights' layout marks them) of a random HF model; returns that model with the *dequantized*
    weights loaded, the reference the FP8 checkpoint must reproduce."""
    import json

    from safetensors.torch import save_file

    from dsv3_weights.fp8 import dequantize_fp8_blocks, quantize_fp8_blocks
    from dsv3_weights.layout import checkpoint_layout

    if cfg.quantization_config is None:
        raise ValueError("save_fp8_checkpoint needs a config with quantization_config")
    rows, cols = cfg.quantization_config.weight_block_size
    block = (rows, cols)
    model = hf_causal_lm(cfg, seed=seed)
    reference = model.state_dict()
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        stored[name] = tensor.contiguous()
    for spec in checkpoint_layout(cfg, include_mtp=False).values():
        if spec.fp8:
            weight_fp8, scale_inv = quantize_fp8_blocks(reference[spec.name], block)
            stored[spec.name], stored[spec.scale_name] = weight_fp8, scale_inv
            reference[spec.name] = dequantize_fp8_blocks(weight_fp8, scale_inv, block, torch.float32)
    model.load_state_dict(reference)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(stored, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**cfg.to_hf(), "architectures": ["DeepseekV3ForCausalLM"]}))
    return model


def inference_config(
    checkpoint: Path,
    *,
    tp_degree: int = 1,
    batch_size: int = 1,
    seq_len: int = 64,
    dtype: torch.dtype = torch.float32,
    **neuron_kwargs: Any,
) -> Any:
    """`Dsv3InferenceConfig` for CPU mode as users build it (`load_pretrained_config`), `max_context_length ==
    seq_len` (a CPU-mode requirement)."""
    from neuronx_distributed_inference.utils.hf_adapter import load_pretrained_config

    from dsv3_model.neuron import Dsv3NeuronConfig, NeuronDsv3ForCausalLM

    neuron_config = Dsv3NeuronConfig(
        tp_degree=tp_degree,
        batch_size=batch_size,
        seq_len=seq_len,
        max_context_length=seq_len,
        torch_dtype=dtype,
        on_cpu=True,
        **neuron_kwargs,
    )
    return NeuronDsv3ForCausalLM.get_config_cls()(neuron_config, load_config=load_pretrained_config(str(checkpoint)))


def build_neuron_model(checkpoint: Path, **options: Any) -> Any:
    """`NeuronDsv3ForCausalLM` in NxDI CPU mode, fp32 (`inference_config`'s options), weights loaded by `to_cpu()`."""
    from dsv3_model.neuron import NeuronDsv3ForCausalLM

    model = NeuronDsv3ForCausalLM(str(checkpoint), inference_config(checkpoint, **options))
    model.to_cpu()
    return model


def prefill_last_logits(model: Any, input_ids_BS: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] of each row's last token from one context-encoding call (right padding: full rows)."""
    batch, seq = input_ids_BS.shape
    model.reset()
    with torch.no_grad():
        out = model(
            input_ids_BS,
            attention_mask=torch.ones_like(input_ids_BS),
            position_ids=torch.arange(seq)[None].expand(batch, seq),
            seq_ids=torch.arange(batch, dtype=torch.int32),
        )
    return out.logits[:, -1].float()


def free_port() -> int:
    """A port the OS hands out now, for in-process rendezvous (`MASTER_PORT`): suites of several checkouts (or
    CI jobs) on one host must not share a fixed port (the second fails with EADDRINUSE)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(script: str, port: int, *args: str, ranks: int = 2) -> None:
    """Run `script` (a worker next to this file) on `ranks` CPU processes under torchrun; fail with its stderr.

    `--standalone`: torchrun rendezvouses on a port it picks itself, so concurrent suites on one host do not
    collide. `port` is not used (a fixed port did collide); it stays so existing callers keep working."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(ranks),
        str(Path(__file__).parent / script),
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{result.stderr[-4000:]}")


def hf_greedy_tokens(hf: Any, input_ids_BS: torch.Tensor) -> torch.Tensor:
    """transformers' greedy generation over unpadded prompts: prompt plus NEW_TOKENS per row (the reference)."""
    return hf.generate(
        input_ids_BS,
        attention_mask=torch.ones_like(input_ids_BS),
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
    )


def greedy_tokens(
    model: Any, input_ids_BS: torch.Tensor, attention_mask_BS: torch.Tensor, new_tokens: int
) -> torch.Tensor:
    """NxDI's HF generation adapter, greedy: prompt plus `new_tokens` per row."""
    from neuronx_distributed_inference.utils.hf_adapter import HuggingFaceGenerationAdapter

    model.reset()
    adapter = HuggingFaceGenerationAdapter(model)
    return adapter.generate(
        input_ids_BS,
        attention_mask=attention_mask_BS,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
    )

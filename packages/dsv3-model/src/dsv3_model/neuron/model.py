"""The NxDI causal LM for the DeepSeek-V3 family: `NeuronDsv3Model` (the traced module) and
`NeuronDsv3ForCausalLM` (the application class users and vLLM's Neuron plugin instantiate).

Contract: docs/nxdi-contract.md sections 4 and 7. Embedding split across the hidden dim, `lm_head`
column-parallel and padded (`gather_output` unless sampling on device, which gathers itself; on CPU always), the
latent KV manager (contiguous, or blocks under `is_block_kv_layout`) installed in
`init_inference_optimization`, and the bucket attributes NxDI sets when tracing set from each call's shapes
(`bucket_shapes.py`), so CPU mode runs every bucket and prefix-cached prefills.
"""

from __future__ import annotations

from typing import Any

import torch
from neuronx_distributed.parallel_layers.layers import ColumnParallelLinear, ParallelEmbedding
from neuronx_distributed_inference.models.model_base import NeuronBaseForCausalLM, NeuronBaseModel
from neuronx_distributed_inference.modules.generation.sampling import create_sampler
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_model.neuron.bucket_shapes import bucket_attributes
from dsv3_model.neuron.config import Dsv3InferenceConfig
from dsv3_model.neuron.kv_cache import LatentBlockKVCacheManager, LatentKVCacheManager
from dsv3_model.neuron.layers import Dsv3DecoderLayer
from dsv3_model.nxdi_checkpoint.state_dict import convert_hf_to_neuron_state_dict

# The contrib port's flags (contrib/models/DeepSeek-V3/src/modeling_deepseek.py:367-375, :863-868);
# NxDI's wrapper appends its own --internal-hlo2tensorizer-options, so that one is not repeated here.
CONTRIB_COMPILER_ARGS = (
    "--enable-saturate-infinity --enable-mixed-precision-accumulation --model-type transformer -O1"
    " --tensorizer-options='--enable-ccop-compute-overlap --cc-pipeline-tiling-factor=2'"
    " --tensorizer-options='--vectorize-strided-dma' --auto-cast=none"
)
FP8_AS_NEURON_E4M3 = "--experimental-unsafe-fp8e4m3fn-as-fp8e4m3"
HLO2TENSORIZER = "--internal-hlo2tensorizer-options='"


def fp8_as_neuron_e4m3(compiler_args: str) -> str:
    """`compiler_args` with FP8 compiled as Neuron's e4m3, inside the one hlo2tensorizer option NxDI's wrapper
    appends (`models/model_wrapper.py:146-162`), exactly as it writes it under its own `quantized` (`:148-157`).

    FP8 routed experts (rescaled into +-240, nxdi_checkpoint/fp8_experts.py) need it, and NxDI's `quantized`
    stays off (docs/nxdi-contract.md section 19); a second hlo2tensorizer option would leave which one the
    compiler keeps to its argument parser."""
    if FP8_AS_NEURON_E4M3 in compiler_args:
        return compiler_args
    if compiler_args.count(HLO2TENSORIZER) != 1:
        raise ValueError(f"expected one {HLO2TENSORIZER}...' in NxDI's compiler args, got: {compiler_args}")
    return compiler_args.replace(HLO2TENSORIZER, f"{HLO2TENSORIZER}{FP8_AS_NEURON_E4M3} ")


class NeuronDsv3Model(NeuronBaseModel):
    def setup_attr_for_model(self, config: Dsv3InferenceConfig) -> None:
        self.on_device_sampling = config.neuron_config.on_device_sampling_config is not None
        self.tp_degree = config.neuron_config.tp_degree
        self.hidden_size = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.max_batch_size = config.neuron_config.max_batch_size
        self.buckets = config.neuron_config.buckets

    def init_model(self, config: Dsv3InferenceConfig) -> None:
        cfg = config.model_config()
        dtype = config.neuron_config.torch_dtype
        self.padding_idx = None
        self.vocab_size = cfg.vocab_size
        self.embed_tokens = ParallelEmbedding(
            cfg.vocab_size, cfg.hidden_size, dtype=dtype, shard_across_embedding=True, pad=True
        )
        self.layers = nn.ModuleList(Dsv3DecoderLayer(config, cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # On device the sampler gathers across the tp group itself; NxDI's CPU sampler has no process group
        # and samples what it is given (`modules/generation/sampling.py:271-279`, `:372-374`), so on CPU the
        # logits are gathered first, or a rank would sample from its vocabulary shard alone.
        self.lm_head = ColumnParallelLinear(
            cfg.hidden_size,
            cfg.vocab_size,
            bias=False,
            gather_output=not self.on_device_sampling or config.neuron_config.on_cpu,
            dtype=dtype,
            pad=True,
        )

    def init_inference_optimization(self, config: Dsv3InferenceConfig) -> None:
        if self.on_device_sampling:
            self.sampler = create_sampler(config.neuron_config, self.lm_head.tensor_parallel_group.size())
        if config.neuron_config.is_block_kv_layout:
            self.kv_mgr = LatentBlockKVCacheManager(config, config.model_config(), num_kv_head=self.num_key_value_heads)
        else:
            self.kv_mgr = LatentKVCacheManager(
                config, config.model_config(), num_kv_head=self.num_key_value_heads, global_rank=self.rank_util
            )

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        seq_ids: torch.Tensor,
        sampling_params: torch.Tensor,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """NxDI's forward, after setting the bucket attributes these inputs imply (`bucket_shapes.py`)."""
        for name, value in bucket_attributes(self.neuron_config, input_ids, attention_mask).items():
            setattr(self, name, value)
        return super().forward(input_ids, attention_mask, position_ids, seq_ids, sampling_params, *args, **kwargs)


class NeuronDsv3ForCausalLM(NeuronBaseForCausalLM):
    _model_cls = NeuronDsv3Model

    @classmethod
    def get_config_cls(cls) -> type[Dsv3InferenceConfig]:
        return Dsv3InferenceConfig

    @staticmethod
    def convert_hf_to_neuron_state_dict(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        return convert_hf_to_neuron_state_dict(state_dict, config)

    @staticmethod
    def load_hf_model(model_path: str, **kwargs: Any) -> nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.fp8_expert_grid() is not None:
            for wrapper in self.models:
                wrapper.compiler_args = fp8_as_neuron_e4m3(wrapper.compiler_args)

    def get_compiler_args(self) -> str:
        return f"{CONTRIB_COMPILER_ARGS} --lnc={self.neuron_config.logical_nc_config}"

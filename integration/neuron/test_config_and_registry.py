"""The inference config round-trips through NxDI's `neuron_config.json` (NxDI reloads it with
`cls(**saved)`, after the NxDI aliases have overwritten HF names such as `intermediate_size`), the
converted checkpoint covers the model's parameters exactly (registration: test_vllm_plugin.py)."""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import torch


def _config(cfg, tp_degree: int = 1):  # type: ignore[no-untyped-def]
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    neuron_config = Dsv3NeuronConfig(
        tp_degree=tp_degree, batch_size=1, seq_len=32, max_context_length=32, torch_dtype=torch.float32, on_cpu=True
    )
    return Dsv3InferenceConfig.from_model_config(cfg, neuron_config)


@pytest.mark.parametrize("name", ["tiny", "v2-lite-like"])
def test_config_survives_save_and_load(name: str, tmp_path: Path) -> None:
    from dsv3_model.neuron import Dsv3InferenceConfig

    cfg = harness.model_config(name)
    config = _config(cfg)
    assert (config.intermediate_size, config.dense_intermediate_size) == (
        cfg.moe_intermediate_size,
        cfg.intermediate_size,
    )
    assert (config.num_key_value_heads, config.head_dim) == (1, cfg.latent_cache_width)
    config.save(str(tmp_path))
    reloaded = Dsv3InferenceConfig.load(str(tmp_path))
    assert reloaded.model_config() == config.model_config() == cfg
    assert reloaded.intermediate_size == cfg.moe_intermediate_size
    assert reloaded.dense_intermediate_size == cfg.intermediate_size
    assert reloaded.neuron_config.normalize_top_k_affinities is False
    assert reloaded.neuron_config.router_config.dtype == torch.float32


@pytest.mark.parametrize("option", [{"layer_boundary_markers": True}, {"sequence_parallel_enabled": True}])
def test_unsupported_neuron_options_are_refused(option: dict[str, bool]) -> None:
    """Options that change the decoder-layer contract fail at config time, naming the option."""
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    neuron_config = Dsv3NeuronConfig(
        tp_degree=1, batch_size=1, seq_len=32, max_context_length=32, on_cpu=True, **option
    )
    with pytest.raises(ValueError, match=next(iter(option))):
        Dsv3InferenceConfig.from_model_config(harness.model_config("tiny"), neuron_config)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"hybrid_sharding_config": {"moe_cte_ep_degree": 2}}, "hybrid_sharding_config"),
        ({"moe_ep_degree": 2, "moe_tp_degree": 2}, "moe_ep_degree=2 x moe_tp_degree=2 must equal tp_degree=2"),
        ({"moe_ep_degree": 3, "moe_tp_degree": 1, "tp_degree": 3}, "moe_ep_degree=3 does not divide n_routed_ex"),
        # NxD raises in expert-parallel token generation below tokens x top_k >= experts (tiny: 16 experts, top 4)
        (
            {"moe_ep_degree": 2, "moe_tp_degree": 1},
            "moe_ep_degree=2 needs tkg_batch_size x num_experts_per_tok >= n_routed_experts, got 1 x 4 < 16",
        ),
        (
            {
                "moe_ep_degree": 2,
                "moe_tp_degree": 1,
                "batch_size": 4,
                "ctx_batch_size": 1,
                "seq_len": 2,
                "max_context_length": 2,
            },
            "needs ctx_batch_size x smallest context bucket x num_experts_per_tok >= n_routed_experts, got 2 x 4",
        ),
    ],
)
def test_inconsistent_expert_parallel_options_are_refused(option: dict[str, object], message: str) -> None:
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    settings: dict[str, object] = {"tp_degree": 2, "batch_size": 1, "seq_len": 32, "max_context_length": 32}
    neuron_config = Dsv3NeuronConfig(**{**settings, **option}, on_cpu=True)
    with pytest.raises(ValueError, match=message):
        Dsv3InferenceConfig.from_model_config(harness.model_config("tiny"), neuron_config)


@pytest.mark.parametrize(
    ("changes", "tp_degree", "message"),
    [
        ({"hidden_size": 66}, 4, "hidden_size=66 is not divisible by tp_degree=4"),
        (
            {"num_attention_heads": 8, "num_key_value_heads": 8, "n_routed_experts": 12},
            8,
            "n_routed_experts=12 is not divisible by tp_degree=8",
        ),
    ],
)
def test_sizes_the_latent_and_router_splits_cannot_cut_are_refused(
    changes: dict[str, int], tp_degree: int, message: str
) -> None:
    """q_a_proj / kv_a_proj_with_mqa split hidden over tp, the router splits the experts: one line naming the field."""
    with pytest.raises(ValueError, match=message):
        _config(harness.model_config("tiny").replace(**changes), tp_degree=tp_degree)


def test_expert_parallel_at_enough_tokens_is_accepted() -> None:
    """Batch 4 x top 4 = 16 tokens x experts reach tiny's 16 experts in both graphs (the tp2 x ep2 suite runs it)."""
    from dsv3_model.neuron import Dsv3InferenceConfig, Dsv3NeuronConfig

    neuron_config = Dsv3NeuronConfig(
        tp_degree=2, moe_ep_degree=2, moe_tp_degree=1, batch_size=4, seq_len=32, max_context_length=32, on_cpu=True
    )
    config = Dsv3InferenceConfig.from_model_config(harness.model_config("tiny"), neuron_config)
    assert config.neuron_config.moe_ep_degree == 2


def test_converted_checkpoint_covers_the_model_exactly(tmp_path: Path) -> None:
    """Every key `to_cpu()` loads is one the model has, and every model tensor except the KV cache is loaded."""
    from safetensors.torch import load_file

    from dsv3_model.neuron import convert_hf_to_neuron_state_dict

    cfg = harness.model_config("tiny")
    harness.save_hf_checkpoint(cfg, tmp_path)
    model = harness.build_neuron_model(tmp_path, tp_degree=1, seq_len=32)
    hf_keys = {
        key.removeprefix("model."): tensor for key, tensor in load_file(str(tmp_path / "model.safetensors")).items()
    }
    converted = convert_hf_to_neuron_state_dict(hf_keys, model.config)
    # The KV cache is state, not weights.
    model_keys = {key for key in model.context_encoding_model.model.state_dict() if not key.startswith("kv_mgr.")}
    assert set(converted) == model_keys

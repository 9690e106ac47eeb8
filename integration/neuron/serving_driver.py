"""Test support: the NxDI model driven the way vLLM's Neuron plugin drives it, and the serving scenarios
of the suite (bucketing, continuous batching, the plugin's default NeuronConfig, on-device sampling).

vLLM's Neuron runner (vllm-project/vllm-neuron a5ef7c8, `vllm_neuron/worker/neuronx_distributed_model_runner.py`)
gives each new request a free sequence slot (`:704-724`) and prefills it alone (`ctx_batch_size=1`), with
`position_ids = arange(prompt)`; a decode step sends the last token of every running request with its
position and slot (`:767-789`), sorted by slot (`neuronx_distributed_model_loader.py:111-130`), always
with `attention_mask=None` (`:336-345`: NxDI infers the mask from the positions) and one
`(top_k, top_p, temperature)` row per request (`:1106-1141`). Logits come back in `output.logits`, sampled
ids (on-device sampling) in `output.hidden_states` (`:347-365`). `Request` and `run_schedule` reproduce
that; requests start at different steps and a finished request's slot is reused by a later one.

Shape legend: B rows, S tokens, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsv3_config import ModelConfig

# Bucketing (issue 14): context-encoding and token-generation buckets; prompts of 9, 40 and 100 tokens.
BUCKET_OPTIONS: dict[str, Any] = {
    "batch_size": 1,
    "seq_len": 256,
    "max_context_length": 128,
    "enable_bucketing": True,
    "context_encoding_buckets": [32, 64, 128],
    "token_generation_buckets": [64, 128, 256],
}
BUCKET_PROMPT_LENGTHS = (9, 40, 100)
BUCKET_NEW_TOKENS = 64

# Continuous batching: 4 slots, 5 requests (slot, first step, prompt length, tokens to generate); request 4
# takes slot 1 after request 1 finished (its 6 tokens end at step 5; the slot idles for steps 6-8).
BATCHING_OPTIONS: dict[str, Any] = {
    "batch_size": 4,
    "ctx_batch_size": 1,
    "is_continuous_batching": True,
    "seq_len": 128,
    "max_context_length": 128,
    "enable_bucketing": True,
    "context_encoding_buckets": [32, 128],
    "token_generation_buckets": [64, 128],
}


# The NeuronConfig vLLM's Neuron plugin builds by default (`_get_default_neuron_config`,
# vllm-project/vllm-neuron a5ef7c8 `vllm_neuron/worker/neuronx_distributed_model_loader.py:725-789`) for
# `vllm serve MODEL --tensor-parallel-size 2 --max-num-seqs 4 --max-model-len 256 --block-size 32`, prefix
# caching on (vLLM V1's default; the Neuron platform then requires `--block-size`, `vllm_neuron/platform.py:208-210`,
# and turns chunked prefill off, :176-183): `batch_size = max_num_seqs`, `max_context_length = max_model_len`
# (:733-739), `pa_num_blocks = ceil(256 // 32) * 4` (:741-744), `pa_block_size = 32`, `is_block_kv_layout`
# and `is_prefix_caching` from prefix caching (:779-782). `torch_dtype` is the model's dtype through
# `TORCH_DTYPE_TO_NEURON_AMP` (:767-768); here fp32, which NxDI's CPU mode needs at tp > 1 (gloo has no
# bf16), plus `on_cpu=True`. The plugin passes an `OnDeviceSamplingConfig(dynamic=True, deterministic=False)`
# object; NeuronConfig builds the same object from this dict (NxDI `models/config.py:173-176`).
PLUGIN_DEFAULT_OPTIONS: dict[str, Any] = {
    "ctx_batch_size": 1,
    "batch_size": 4,
    "max_context_length": 256,
    "seq_len": 256,
    "enable_bucketing": True,
    "is_continuous_batching": True,
    "quantized": False,
    "padding_side": "right",
    "on_device_sampling_config": {"dynamic": True, "deterministic": False},
    "lora_config": None,
    "pa_num_blocks": 32,
    "pa_block_size": 32,
    "is_block_kv_layout": True,
    "is_prefix_caching": True,
}
# `--no-enable-prefix-caching` (the contrib port's recipe): `block_size = max_model_len` (platform.py:203-206),
# so `pa_num_blocks = ceil(256 // 256) * 4`, and both block-KV flags off.
PLUGIN_CONTIGUOUS_OPTIONS: dict[str, Any] = {
    **PLUGIN_DEFAULT_OPTIONS,
    "pa_num_blocks": 4,
    "pa_block_size": 256,
    "is_block_kv_layout": False,
    "is_prefix_caching": False,
}
# Per-request (top_k, top_p, temperature) rows as the plugin's runner writes them (`..._model_runner.py:1115-1128`:
# temperature 0 becomes top_k 1 at temperature 1): greedy, greedy, top-k + nucleus, greedy, top-k + nucleus.
PLUGIN_SAMPLING = [(1, 1.0, 1.0), (1, 1.0, 1.0), (5, 0.9, 0.7), (1, 1.0, 1.0), (3, 0.95, 1.3)]


@dataclass
class Request:
    """One request of a schedule: where and when it runs, and what it sampled (greedy without sampling)."""

    slot: int
    start_step: int
    prompt: torch.Tensor  # [S] token ids
    new_tokens: int
    sampling: tuple[float, float, float] = (1, 1.0, 1.0)  # (top_k, top_p, temperature), NxDI's row order
    blocks: list[int] = field(default_factory=list)  # its KV blocks under the block layout (vLLM's choice)
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)  # [V] per generated token (without sampling)

    @property
    def done(self) -> bool:
        return len(self.tokens) >= self.new_tokens


def batching_requests(cfg: ModelConfig, sampling: list[tuple[float, float, float]] | None = None) -> list[Request]:
    """The continuous-batching schedule: 4 requests starting at steps 0-3, one replaced mid-run."""
    plan = ((0, 0, 12, 20), (1, 1, 7, 6), (2, 2, 25, 20), (3, 3, 5, 20), (1, 9, 30, 16))
    generator = torch.Generator().manual_seed(5)
    requests = []
    for index, (slot, start, length, new) in enumerate(plan):
        prompt = torch.randint(2, cfg.vocab_size, (length,), generator=generator)
        row = sampling[index] if sampling is not None else (1, 1.0, 1.0)
        # Two 32-token blocks per slot, block 0 left unused (vLLM's null block): request 4 reuses slot 1's.
        requests.append(Request(slot, start, prompt, new, row, blocks=[2 * slot + 1, 2 * slot + 2]))
    return requests


def bucket_requests(cfg: ModelConfig) -> list[Request]:
    """The bucketing prompts, one request each (batch 1), run one after the other."""
    generator = torch.Generator().manual_seed(4)
    return [
        Request(0, 0, torch.randint(2, cfg.vocab_size, (length,), generator=generator), BUCKET_NEW_TOKENS)
        for length in BUCKET_PROMPT_LENGTHS
    ]


def build_model(checkpoint: Path, tp_degree: int, **neuron_kwargs: Any) -> Any:
    """`NeuronDsv3ForCausalLM` from `checkpoint` in NxDI CPU mode with exactly these NeuronConfig options."""
    from neuronx_distributed_inference.utils.hf_adapter import load_pretrained_config

    from dsv3_model.neuron import NeuronDsv3ForCausalLM

    options = {"torch_dtype": torch.float32, "on_cpu": True, **neuron_kwargs, "tp_degree": tp_degree}
    neuron_config = NeuronDsv3ForCausalLM.get_neuron_config_cls()(**options)
    config = NeuronDsv3ForCausalLM.get_config_cls()(neuron_config, load_config=load_pretrained_config(str(checkpoint)))
    model = NeuronDsv3ForCausalLM(str(checkpoint), config)
    model.to_cpu()
    return model


def record_shapes(model: Any) -> list[tuple[int, int]]:
    """(tokens, mask length) of every call the traced module receives: the bucket each graph ran at."""
    shapes: list[tuple[int, int]] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        shapes.append((args[0].shape[1], args[1].shape[-1]))

    # CPU mode shares one eager module between the submodels, except under continuous batching (one each).
    for module in {id(wrapper.model): wrapper.model for wrapper in model.models}.values():
        module.register_forward_pre_hook(hook)
    return shapes


def _paged_inputs(model: Any, positions_BS: torch.Tensor, rows: list[Request]) -> dict[str, torch.Tensor]:
    """The block-KV inputs vLLM's runner adds under prefix caching (`..._model_runner.py:739-763`,
    `:798-832`, `:858-917`): a prefill maps each prompt token to its slot (padded with -1 to the model
    length), a decode step maps its one token; each row names its blocks, padded with block 0."""
    from paged_requests import PagedLayout

    layout = PagedLayout(model.neuron_config.pa_block_size, model.neuron_config.seq_len)
    first, last = int(positions_BS[0, 0]), int(positions_BS[0, -1]) + 1
    if positions_BS.shape[1] > 1:  # a prefill: one row, nothing computed before it
        slot_mapping = layout.prefill_slots_1M(rows[0].blocks, first, last)
    else:
        slot_mapping = torch.tensor(
            [layout.slots(r.blocks, int(p), int(p) + 1) for r, p in zip(rows, positions_BS[:, 0], strict=True)]
        )
    lengths_B1 = positions_BS[:, -1:] + 1
    return {
        "slot_mapping": slot_mapping,
        "block_table": torch.cat([layout.table_1N(request.blocks) for request in rows]),
        "full_context_lens": lengths_B1,
        "computed_context_lens": lengths_B1 - positions_BS.shape[1],
    }


def _call(model: Any, ids_BS: torch.Tensor, positions_BS: torch.Tensor, slots: list[int], rows: list[Request]) -> Any:
    sampling_B3 = torch.tensor([list(request.sampling) for request in rows], dtype=torch.float32)
    paged = _paged_inputs(model, positions_BS, rows) if model.neuron_config.is_prefix_caching else {}
    if paged and ids_BS.shape[1] == 1 and model.neuron_config.on_cpu:
        # NxDI's CPU path pads a partial decode batch with the missing slots appended unsorted (prefix caching
        # keeps the order) and then picks output rows `index_select(logits, 0, seq_ids)` (NxDI
        # `models/model_wrapper.py:610-622`, `:699-701`): slots [0, 2, 3] get rows 0, 2, 3 of [0, 2, 3, 1],
        # another request's logits. On a Neuron host it slices the first rows instead (:689-690). Under the
        # block layout the cache is addressed by block table and slot mapping, not seq_ids, so numbering the
        # rows 0..B-1 here gives the CPU path the device path's rows.
        slots = list(range(len(rows)))
    with torch.no_grad():
        return model(
            ids_BS,
            attention_mask=None,
            position_ids=positions_BS,
            seq_ids=torch.tensor(slots, dtype=torch.int32),
            sampling_params=sampling_B3,
            **paged,
        )


def _take(model: Any, output: Any, rows: list[Request]) -> None:
    """Append each row's next token (sampled on device, or greedy on the host) and its logits."""
    if model.neuron_config.on_device_sampling_config is not None:
        tokens_B = output.hidden_states.reshape(len(rows), -1)[:, -1]
        for request, token in zip(rows, tokens_B.tolist(), strict=True):
            request.tokens.append(int(token))
        return
    logits_BV = output.logits.reshape(len(rows), -1, output.logits.shape[-1])[:, -1].float()
    for request, logits_V in zip(rows, logits_BV, strict=True):
        request.logits.append(logits_V.clone())
        request.tokens.append(int(logits_V.argmax()))


def run_schedule(model: Any, requests: list[Request]) -> None:
    """Step by step: prefill each request starting now (alone, in its slot), then decode every running one."""
    model.reset()
    step = 0
    while not all(request.done for request in requests):
        for request in requests:
            if request.start_step == step:
                length = request.prompt.shape[0]
                output = _call(model, request.prompt[None], torch.arange(length)[None], [request.slot], [request])
                _take(model, output, [request])
        running = sorted(
            (r for r in requests if r.start_step <= step and r.tokens and not r.done), key=lambda r: r.slot
        )
        if running:
            ids_B1 = torch.tensor([[request.tokens[-1]] for request in running])
            positions_B1 = torch.tensor([[request.prompt.shape[0] + len(request.tokens) - 1] for request in running])
            output = _call(model, ids_B1, positions_B1, [request.slot for request in running], running)
            _take(model, output, running)
        step += 1


# The plugin's configurations, with the sampler's uniform draw random (as served) or fixed at 0.5.
PLUGIN_SCENARIOS: dict[str, tuple[dict[str, Any], bool]] = {
    "plugin_default": (PLUGIN_DEFAULT_OPTIONS, False),
    "plugin_default_deterministic": (PLUGIN_DEFAULT_OPTIONS, True),
    "plugin_contiguous": (PLUGIN_CONTIGUOUS_OPTIONS, False),
}


def run_scenario(scenario: str, cfg: ModelConfig, checkpoint: Path, tp_degree: int) -> dict[str, Any]:
    """Build the model for `scenario` and run it: `buckets` runs its prompts one after the other, `batching`
    its whole schedule at once. Returns each request's tokens and logits and every graph call's shape."""
    if scenario == "buckets":
        model = build_model(checkpoint, tp_degree, **BUCKET_OPTIONS)
        requests = bucket_requests(cfg)
        schedules = [[request] for request in requests]
    elif scenario == "batching":
        model = build_model(checkpoint, tp_degree, **BATCHING_OPTIONS)
        requests = batching_requests(cfg)
        schedules = [requests]
    elif scenario in PLUGIN_SCENARIOS:
        options, deterministic = PLUGIN_SCENARIOS[scenario]
        sampling = {**options["on_device_sampling_config"], "deterministic": deterministic}
        model = build_model(checkpoint, tp_degree, **{**options, "on_device_sampling_config": sampling})
        requests = batching_requests(cfg, PLUGIN_SAMPLING)
        schedules = [requests]
    else:
        raise ValueError(f"unknown scenario {scenario!r}; known: buckets, batching, {', '.join(PLUGIN_SCENARIOS)}")
    shapes = record_shapes(model)
    # On a Neuron host sampling is one SPMD graph, the same draw on every rank; on CPU each torchrun rank
    # samples with its own torch generator, so all start from one seed or their tokens (hence inputs) diverge.
    torch.manual_seed(0)
    for schedule in schedules:
        run_schedule(model, schedule)
    return {"requests": results(requests), "shapes": shapes}


def results(requests: list[Request]) -> list[dict[str, Any]]:
    return [
        {"tokens": request.tokens, "logits": torch.stack(request.logits) if request.logits else None}
        for request in requests
    ]

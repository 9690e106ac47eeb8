"""`dsv3 golden`'s streamed forward against the in-memory model (bit for bit) and transformers (1e-4).

Checkpoints: the tiny preset and a V2-Lite-like config (model_cases), FP8 and BF16, written by
`make_checkpoint`. transformers cannot load FP8 on a CPU, so for FP8 it loads the same checkpoint
converted to fp32 by `dsv3 convert` (exact: fp8 * scale is exact in fp32).
"""

from __future__ import annotations

import pytest
import torch
from model_cases import model_configs

from dsv3_model.generation import generate, teacher_forced_logits
from dsv3_model.golden.run import golden_greedy, golden_teacher_forced
from dsv3_model.golden.source import CountingSource
from dsv3_model.golden.streamed_model import StreamedWeights, streamed_causal_lm
from dsv3_model.golden.weight_cache import WeightCache
from dsv3_model.hf_bridge import load_hf_causal_lm
from dsv3_model.loading import load_causal_lm
from dsv3_weights import convert_checkpoint
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.synthetic import make_checkpoint

FP32_TOL = 1e-4  # |logit| differences to transformers and between the prefill and decode paths (fp32 rounding)
PROMPT = [3, 17, 5, 42, 8, 99, 23, 11]
NEW_TOKENS = 6
CASES = [(name, fp8) for name in ("tiny", "v2-lite-like") for fp8 in (True, False)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{'fp8' if f else 'bf16'}" for n, f in CASES])
def checkpoint(request, tmp_path_factory):
    name, fp8 = request.param
    directory = tmp_path_factory.mktemp(f"{name}-{fp8}")
    return make_checkpoint(directory / "ckpt", model_configs()[name], fp8=fp8, seed=5, progress=False)


@pytest.fixture(scope="module")
def in_memory(checkpoint):
    model = load_causal_lm(checkpoint, dtype=torch.float32, include_mtp=False)
    return model, generate(model, [PROMPT], NEW_TOKENS, keep_logits=True)


def test_greedy_equals_the_in_memory_model_bit_for_bit(checkpoint, in_memory):
    _, expected = in_memory
    run = golden_greedy(checkpoint, [PROMPT], NEW_TOKENS)
    assert torch.equal(run.golden.scores_NBV, expected.step_logits_BNV.transpose(0, 1))
    assert run.golden.sequences_BL.tolist() == [PROMPT + expected.tokens[0]]


def test_evicting_every_weight_changes_nothing(checkpoint, in_memory):
    """Cache of 0 bytes (every layer and expert re-read at every call), one expert stack per MoE call."""
    _, expected = in_memory
    with CheckpointReader(checkpoint) as reader:
        source = CountingSource(reader, reader.config())
        weights = StreamedWeights(source, torch.float32, WeightCache(0), expert_stack_bytes=1 << 40)
        result = generate(streamed_causal_lm(weights), [PROMPT], NEW_TOKENS, keep_logits=True)
    assert torch.equal(result.step_logits_BNV, expected.step_logits_BNV)
    assert weights.cache.hits == 0


def test_greedy_matches_transformers(checkpoint, tmp_path):
    run = golden_greedy(checkpoint, [PROMPT], NEW_TOKENS)
    hf_dir = checkpoint
    if reader_has_fp8(checkpoint):
        hf_dir = tmp_path / "fp32"
        convert_checkpoint(checkpoint, hf_dir, dtype=torch.float32, mtp="drop", progress=False)
    hf = load_hf_causal_lm(hf_dir)
    with torch.inference_mode():
        hf_LV = hf(run.golden.sequences_BL).logits[0].float()
    first = len(PROMPT) - 1
    diff = (run.golden.scores_NBV[:, 0] - hf_LV[first : first + NEW_TOKENS]).abs().max().item()
    assert diff <= FP32_TOL


def reader_has_fp8(directory) -> bool:
    with CheckpointReader(directory) as reader:
        return any(name.endswith("_scale_inv") for name in reader)


def test_teacher_forced_equals_in_memory_and_free_running(checkpoint, in_memory):
    model, expected = in_memory
    tokens = expected.tokens[0]
    run = golden_teacher_forced(checkpoint, PROMPT, tokens)
    assert run.golden.logits_BLV is not None
    assert torch.equal(run.golden.logits_BLV[0], teacher_forced_logits(model, PROMPT + tokens))
    # free-running scored the same tokens (it produced them): one prefill vs prefill + decodes, fp32 rounding
    free = golden_greedy(checkpoint, [PROMPT], NEW_TOKENS).golden.scores_NBV
    assert (run.golden.scores_NBV - free).abs().max().item() <= FP32_TOL


def test_bf16_equals_the_in_memory_bf16_model(checkpoint):
    model = load_causal_lm(checkpoint, dtype=torch.bfloat16, include_mtp=False)
    expected = generate(model, [PROMPT], 3, keep_logits=True)
    run = golden_greedy(checkpoint, [PROMPT], 3, dtype=torch.bfloat16)
    assert torch.equal(run.golden.scores_NBV, expected.step_logits_BNV.transpose(0, 1))


def test_reads_only_the_experts_the_router_chose(checkpoint, in_memory):
    """The experts read are exactly those the in-memory model's routers picked (forward hooks on them)."""
    model, _ = in_memory
    cfg = model.config
    chosen: set[tuple[int, int]] = set()
    hooks = []
    for index in range(cfg.num_hidden_layers):
        mlp = model.model.layers[index].mlp
        if hasattr(mlp, "gate"):

            def record(_module, _inputs, output, index=index):
                chosen.update((index, int(e)) for e in output[0].unique())

            hooks.append(mlp.gate.register_forward_hook(record))
    generate(model, [PROMPT], 2)
    for hook in hooks:
        hook.remove()
    with CheckpointReader(checkpoint) as reader:
        source = CountingSource(reader, reader.config())
        read: list[str] = []
        original = source.get
        source.get = lambda name: read.append(name) or original(name)  # type: ignore[method-assign]
        weights = StreamedWeights(source, torch.float32, WeightCache(1 << 40), expert_stack_bytes=1 << 40)
        generate(streamed_causal_lm(weights), [PROMPT], 2)
    experts_read = {(int(n.split(".")[2]), int(n.split(".")[5])) for n in read if ".mlp.experts." in n}
    assert experts_read == chosen
    assert len(chosen) < cfg.n_routed_experts * (cfg.num_hidden_layers - cfg.first_k_dense_replace)
    assert len(read) == len(set(read))  # unbounded cache: nothing read twice


def test_bounded_memory_rereads_within_the_bound(checkpoint, in_memory):
    _, expected = in_memory
    unbounded = golden_greedy(checkpoint, [PROMPT], NEW_TOKENS)
    bound = 64 * 1024
    run = golden_greedy(checkpoint, [PROMPT], NEW_TOKENS, max_memory=bound)
    assert run.summary.peak_resident_weights <= bound // 8 * 5
    assert run.summary.bytes_read > unbounded.summary.bytes_read
    # experts stacked in groups (the 8 KiB buffer holds a few) and the group outputs summed: fp32 rounding
    diff = (run.golden.scores_NBV - expected.step_logits_BNV.transpose(0, 1)).abs().max().item()
    assert diff <= FP32_TOL

"""FP8 weights kept resident (`load_causal_lm(weights="fp8-resident")`, `--weights fp8-resident`).

References: the dequantized model loaded from the same checkpoint (itself tied to transformers by
test_model_loading and the HF parity suites) must give the very same logits, bit for bit, in fp32 and in
bf16, when both run the same expert computation (`pinned("loop")`: the resident experts always run the
loop; the dequantized model runs whichever form this machine measured faster, which rounds differently);
the dequantized weights of a partial-block tensor and of one expert against a per-block loop written here.
"""

from __future__ import annotations

import pytest
import torch

from dsv3_config import preset
from dsv3_model.cli.main import main
from dsv3_model.fp8_experts import Fp8GroupedExperts
from dsv3_model.fp8_linear import Fp8BlockLinear
from dsv3_model.generation import generate, teacher_forced_logits
from dsv3_model.loading import load_causal_lm
from dsv3_model.stored_dtype import StoredDtypeLinear
from dsv3_moe.eager_choice import pinned
from dsv3_weights.fp8 import dequantize_traceable_f32
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.synthetic import make_checkpoint

IDS = list(range(3, 40))


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("fp8"), preset("tiny"), fp8=True, seed=5, progress=False)


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("bf16"), preset("tiny"), fp8=False, seed=5, progress=False)


def per_block(fp8: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """fp32 `fp8 * scale` block by block (edge blocks partial)."""
    out = torch.empty(fp8.shape)
    for bi in range(scale.shape[0]):
        for bj in range(scale.shape[1]):
            rows = slice(bi * block[0], (bi + 1) * block[0])
            cols = slice(bj * block[1], (bj + 1) * block[1])
            out[rows, cols] = fp8[rows, cols].float() * scale[bi, bj]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_equal_the_dequantized_model_bit_for_bit(fp8_dir, dtype):
    # The reference kernels on both sides: the same ops in the same order (packed CPU kernels round differently).
    dense = load_causal_lm(fp8_dir, dtype=dtype, include_mtp=False, kernels="reference")
    resident = load_causal_lm(fp8_dir, dtype=dtype, include_mtp=False, weights="fp8-resident", kernels="reference")
    with pinned("loop"):
        want, got = teacher_forced_logits(dense, IDS), teacher_forced_logits(resident, IDS)
        want_gen = generate(dense, [IDS[:5], IDS[:9]], 6, keep_logits=True)
        got_gen = generate(resident, [IDS[:5], IDS[:9]], 6, keep_logits=True)
    assert float(want.float().abs().max()) > 0.1  # non-trivial logits
    assert torch.equal(got, want)
    assert got_gen.tokens == want_gen.tokens
    assert got_gen.step_logits_BNV is not None
    assert want_gen.step_logits_BNV is not None
    assert torch.equal(got_gen.step_logits_BNV, want_gen.step_logits_BNV)


def test_quantized_weights_stay_fp8_and_dequantize_per_block(fp8_dir):
    cfg = preset("tiny")
    block = cfg.quantization_config.weight_block_size  # type: ignore[union-attr]
    model = load_causal_lm(fp8_dir, dtype=torch.bfloat16, include_mtp=False, weights="fp8-resident")
    attention, moe = model.model.layers[0].self_attn, model.model.layers[1].mlp
    assert isinstance(attention.kv_a_proj_with_mqa, Fp8BlockLinear)
    assert isinstance(moe.experts, Fp8GroupedExperts)
    assert moe.experts.gate_up_proj.dtype == torch.float8_e4m3fn
    assert moe.experts.gate_up_proj_scale_inv.dtype == torch.float32  # not rounded through bf16
    assert moe.gate.weight.dtype == torch.float32
    name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"  # 40 x 64 with 32 x 32 blocks: partial rows
    expert = "model.layers.1.mlp.experts.3."
    with CheckpointReader(fp8_dir) as reader:
        assert torch.equal(attention.kv_a_proj_with_mqa.weight, reader.get(name))
        want = per_block(reader.get(name), reader.get(name + "_scale_inv"), block)
        gate = per_block(
            reader.get(expert + "gate_proj.weight"), reader.get(expert + "gate_proj.weight_scale_inv"), block
        )
        up = per_block(reader.get(expert + "up_proj.weight"), reader.get(expert + "up_proj.weight_scale_inv"), block)
        down = per_block(
            reader.get(expert + "down_proj.weight"), reader.get(expert + "down_proj.weight_scale_inv"), block
        )
    assert torch.equal(attention.kv_a_proj_with_mqa.dequantized_weight(), want.to(torch.bfloat16))
    gate_up, got_down = moe.experts.expert_weights(3)
    assert torch.equal(gate_up, torch.cat([gate, up]).to(torch.bfloat16))
    assert torch.equal(got_down, down.to(torch.bfloat16))
    traced_gate_up, traced_down = moe.experts.dequantized_stacks()  # the compiled form's values, held in fp32
    assert torch.equal(traced_gate_up[3], gate_up.float())
    assert torch.equal(traced_down[3], got_down.float())
    chosen_gate_up, chosen_down = moe.experts.dequantized_stacks(torch.tensor([3, 0]))  # a decode step's form
    assert torch.equal(chosen_gate_up[0], gate_up.float())
    assert torch.equal(chosen_down[0], got_down.float())
    layer = attention.kv_a_proj_with_mqa
    assert torch.equal(dequantize_traceable_f32(layer.weight, layer.weight_scale_inv, block, torch.float32), want)


def test_resident_model_holds_about_one_byte_per_quantized_parameter(fp8_dir):
    resident = load_causal_lm(fp8_dir, dtype=torch.bfloat16, include_mtp=False, weights="fp8-resident")
    dense = load_causal_lm(fp8_dir, dtype=torch.bfloat16, include_mtp=False, kernels="reference")
    experts, dense_experts = resident.model.layers[1].mlp.experts, dense.model.layers[1].mlp.experts
    held = sum(t.numel() * t.element_size() for t in experts.state_dict().values())
    # tiny: 16 experts, H 64, I 48, 32 x 32 blocks. Per expert 3 * 48 * 64 FP8 bytes, and fp32 scales:
    # gate and up 2 x 2 blocks each (48 rows: one partial block), down 2 x 2.
    assert held == 16 * (3 * 48 * 64 + 4 * (2 * 4 + 4))
    dense_bytes = sum(t.numel() * t.element_size() for t in dense_experts.state_dict().values())
    assert held < 0.51 * dense_bytes


def test_the_lm_head_keeps_the_checkpoints_bf16_in_an_fp32_model(fp8_dir):
    """Stored BF16 (what the checkpoint holds), also after `.to(float32)`, with products in fp32: the logits
    stay the dequantized model's bit for bit (test above), from half the bytes. The eager measured kernels
    widen it once instead."""
    with CheckpointReader(fp8_dir) as reader:
        stored = reader.get("lm_head.weight")
    model = load_causal_lm(fp8_dir, dtype=torch.float32, include_mtp=False, weights="fp8-resident", kernels="reference")
    assert stored.dtype == torch.bfloat16
    assert torch.equal(model.lm_head.weight, stored)
    assert model.to(torch.float32).lm_head.weight.dtype == torch.bfloat16
    hidden = torch.randn(2, stored.shape[1])
    assert torch.equal(model.lm_head(hidden), hidden @ stored.float().T)
    measured = load_causal_lm(fp8_dir, dtype=torch.float32, include_mtp=False, weights="fp8-resident")
    assert not isinstance(measured.lm_head, StoredDtypeLinear)  # eager kernels: widened once (cpu_kernels)


def test_cli_generate_fp8_resident_prints_the_dequantized_tokens(fp8_dir, capsys):
    args = [
        "generate",
        "--model",
        str(fp8_dir),
        "--prompt-ids",
        "5,6,7",
        "--max-new-tokens",
        "6",
        "--kernels",
        "reference",
    ]
    with pinned("loop"):
        assert main(args) == 0
        dequantized = capsys.readouterr().out
        assert main([*args, "--weights", "fp8-resident"]) == 0
    assert capsys.readouterr().out == dequantized


def test_cli_refuses_fp8_resident_without_an_fp8_checkpoint(bf16_dir, capsys):
    assert main(["generate", "--model", str(bf16_dir), "--weights", "fp8-resident"]) == 2
    assert "--weights fp8-resident: " in capsys.readouterr().err.splitlines()[-1]
    assert main(["generate", "--preset", "tiny", "--weights", "fp8-resident"]) == 2
    assert "needs --model with an FP8 checkpoint" in capsys.readouterr().err.splitlines()[-1]
    assert main(["verify", "--model", str(bf16_dir), "--weights", "fp8-resident"]) == 2
    assert "is not an FP8 checkpoint" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.slow  # compiles (about 20-40 s each on 2 cores)
@pytest.mark.parametrize("prompts", [[IDS[:5], IDS[:9]], [IDS[:9]]], ids=["two-rows", "one-row"])
def test_compiled_decode_of_the_resident_model_matches_its_eager_decode(fp8_dir, prompts):
    """Under torch.compile the FP8 parts dequantize traceably (the same values, test above): one graph,
    the eager tokens, logits within 1e-5 (inductor may fuse the products' order). One row: the FP8 bytes
    decoded inside fused reductions (`dsv3_model.row_products`), only the chosen experts gathered."""
    import torch._dynamo

    model = load_causal_lm(fp8_dir, dtype=torch.float32, include_mtp=False, weights="fp8-resident", kernels="reference")
    torch._dynamo.reset()
    eager = generate(model, prompts, 8, keep_logits=True, compile_decode=False)
    compiled = generate(model, prompts, 8, keep_logits=True, compile_decode=True)
    assert compiled.decode_path == "compiled"
    assert compiled.tokens == eager.tokens
    assert compiled.step_logits_BNV is not None
    assert eager.step_logits_BNV is not None
    torch.testing.assert_close(compiled.step_logits_BNV, eager.step_logits_BNV, rtol=0, atol=1e-5)


@pytest.mark.slow  # compiles (about 20-40 s on 2 cores)
@torch.inference_mode()
def test_compiled_bf16_one_row_decode_of_the_resident_model_is_as_close_to_fp32_as_eager_bf16(fp8_dir):
    """bf16, one row: FP8 bytes decoded and rounded to bf16 in integers inside the fused reductions, stepped on
    the fp32 model's greedy tokens. Reference: the fp32 resident model (bit-equal to the dequantized one, above).
    Bound, on the median over steps of each step's largest error: within twice the eager bf16 model's plus one
    bf16 ulp of the logit scale (the two bf16 paths round at different places; neither is exact). The median,
    because a bf16 rounding may flip one near-tied expert choice in one step (measured: one step of 8 at 0.95,
    in the compiled dequantized bf16 model too), which a wrong product would not limit to one step."""
    import torch._dynamo

    from dsv3_model.compiled_decode import CompiledDecodeStep

    def load(dtype: torch.dtype):  # type: ignore[no-untyped-def]
        return load_causal_lm(fp8_dir, dtype=dtype, include_mtp=False, weights="fp8-resident", kernels="reference")

    prompt, model32, model16 = IDS[:9], load(torch.float32), load(torch.bfloat16)
    tokens = generate(model32, [prompt], 8, compile_decode=False).tokens[0]

    def logits(model, step):  # type: ignore[no-untyped-def]
        caches = model.new_cache(1, len(prompt) + len(tokens))
        model(torch.tensor([prompt]), torch.arange(len(prompt))[None], caches, torch.tensor([len(prompt)]))
        ids = [torch.tensor([t]) for t in tokens]
        return torch.stack([step(ids[i], torch.tensor([len(prompt) + i]), caches)[0].float() for i in range(len(ids))])

    def eager(model):  # type: ignore[no-untyped-def]
        return lambda ids_B, pos_B, caches: model(ids_B[:, None], pos_B[:, None], caches, torch.ones_like(pos_B))[:, 0]

    def step_errors(got: torch.Tensor) -> torch.Tensor:  # per step, the largest logit error
        return (got - want).abs().amax(dim=-1)

    want = logits(model32, eager(model32))
    eager_errors = step_errors(logits(model16, eager(model16)))
    torch._dynamo.reset()
    compiled_errors = step_errors(logits(model16, CompiledDecodeStep(model16)))
    bound = 2 * float(eager_errors.median()) + 2**-8 * float(want.abs().max())
    assert float(compiled_errors.median()) <= bound

"""On a Neuron host (`nox -s neuron_integration`, `-m neuron_device`): compile, load and run for real.

UNTESTED: written from NxDI's own code (`application_base.compile/load`, `utils/benchmark.py`
`benchmark_sampling`) without access to a Neuron host; expect to adjust tolerances on first run.

- Tiny preset (always, on any host with `DSV3_NEURON_TP` NeuronCores, default 2): compiled with
  `save_sharded_checkpoint=True`. NxDI's own per-rank files (ModelBuilder's `shard_checkpoint`, bf16 cast
  included) must equal `dsv3 shard` key for key and bit for bit; the model is then loaded from the
  `dsv3 shard` files and its prefill logits and 16 greedy tokens compared with transformers (fp32 on CPU).
- The tiny preset again under the NeuronConfig vLLM's Neuron plugin builds by default (prefix caching,
  continuous batching over 4 slots, bucketing, dynamic on-device sampling), driven as the plugin drives it.
- TTFT / TPOT p50/p90/p99 and throughput from `benchmark_sampling`, as the contrib port's README reports
  them, written in the benchmark record format to `$DSV3_NEURON_BENCH_OUT` (default: printed only).
- The 671B recipe, when `DSV3_NEURON_MODEL_DIR` names an HF checkpoint (FP8 or BF16): the contrib port's
  settings (tp 64, lnc 2, seq 512, bf16, pre-sharded weights by `dsv3 shard`), compiled into
  `DSV3_NEURON_COMPILED_DIR`; generation must be finite and deterministic, and with
  `DSV3_NEURON_GOLDEN_LOGITS` (a `torch.save`d [T, B, V] tensor for the prompt ids in
  `DSV3_NEURON_GOLDEN_IDS`) NxDI's `check_accuracy_logits_v2` runs teacher-forced against it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import harness
import pytest
import serving_driver
import torch
from serving_reference import assert_plugin_serving

pytestmark = pytest.mark.neuron_device

TP = int(os.environ.get("DSV3_NEURON_TP", "2"))
SEQ_LEN = 64
# bf16 on device vs fp32 transformers, logits of magnitude ~0.5 on the tiny random model: bf16 keeps 8 bits
# of mantissa (relative 4e-3), accumulated over 3 layers; 5e-2 absolute leaves room, greedy tokens must agree.
DEVICE_LOGIT_TOL = 5e-2


def _build(checkpoint: Path, neuron_config: Any) -> Any:
    from neuronx_distributed_inference.utils.hf_adapter import load_pretrained_config

    from dsv3_model.neuron import NeuronDsv3ForCausalLM

    config = NeuronDsv3ForCausalLM.get_config_cls()(neuron_config, load_config=load_pretrained_config(str(checkpoint)))
    return NeuronDsv3ForCausalLM(str(checkpoint), config)


def _dsv3_shard(checkpoint: Path, compiled: Path, tp: int) -> None:
    from dsv3_model.cli.main import main

    assert main(["shard", str(checkpoint), str(compiled), "--tp", str(tp), "--dtype", "bf16"]) == 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from dsv3_model.neuron import Dsv3NeuronConfig

    cfg = harness.model_config("tiny")
    root = tmp_path_factory.mktemp("tiny-neuron")
    checkpoint, compiled = root / "hf", root / "compiled"
    hf = harness.save_hf_checkpoint(cfg, checkpoint)
    neuron_config = Dsv3NeuronConfig(
        tp_degree=TP,
        batch_size=1,
        seq_len=SEQ_LEN,
        max_context_length=harness.PROMPT_LEN + 1,
        torch_dtype=torch.bfloat16,
        save_sharded_checkpoint=True,
    )
    model = _build(checkpoint, neuron_config)
    model.compile(str(compiled))  # writes NxDI's own compiled/weights/tp{r}_sharded_checkpoint.safetensors
    shutil.move(compiled / "weights", root / "nxdi_weights")
    _dsv3_shard(checkpoint, compiled, TP)
    model.load(str(compiled))  # reads the `dsv3 shard` files
    return {"cfg": cfg, "hf": hf, "model": model, "root": root, "compiled": compiled}


def test_nxdi_presharded_files_equal_dsv3_shard(tiny: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    nxdi_dir, ours_dir = tiny["root"] / "nxdi_weights", tiny["compiled"] / "weights"
    assert sorted(p.name for p in ours_dir.glob("*.safetensors")) == sorted(p.name for p in nxdi_dir.iterdir())
    for path in sorted(nxdi_dir.iterdir()):
        nxdi, ours = load_file(str(path)), load_file(str(ours_dir / path.name))
        assert set(ours) == set(nxdi), path.name
        for key, tensor in nxdi.items():
            assert ours[key].dtype == tensor.dtype, f"{path.name}: {key}"
            assert torch.equal(ours[key].view(torch.uint8), tensor.view(torch.uint8)), f"{path.name}: {key}"


def test_loaded_from_dsv3_shard_matches_transformers(tiny: dict[str, Any]) -> None:
    ids_BS = harness.prompt(tiny["cfg"])
    with torch.no_grad():
        expected_BV = tiny["hf"](ids_BS).logits[:, -1]
    expected_BS = harness.hf_greedy_tokens(tiny["hf"], ids_BS)
    logits_BV = harness.prefill_last_logits(tiny["model"], ids_BS)
    torch.testing.assert_close(logits_BV, expected_BV, atol=DEVICE_LOGIT_TOL, rtol=0)
    tokens_BS = harness.greedy_tokens(tiny["model"], ids_BS, torch.ones_like(ids_BS), harness.NEW_TOKENS)
    assert tokens_BS.tolist() == expected_BS.tolist()


def _benchmark_records(model: Any, case: str) -> list[dict[str, Any]]:
    """`benchmark_sampling` (20 runs) as benchmark records: TTFT = context encoding, TPOT = token generation."""
    import transformers
    from neuronx_distributed_inference.utils.benchmark import benchmark_sampling

    generation_config = transformers.GenerationConfig(do_sample=False, top_k=1, top_p=1.0, temperature=1.0)
    report = benchmark_sampling(model, generation_config=generation_config, num_runs=20)
    records = []
    for part, name in (("context_encoding_model", "ttft"), ("token_generation_model", "tpot"), ("e2e_model", "e2e")):
        stats = report[part]
        for q in ("p50", "p90", "p99"):
            records.append((name, f"{name}_{q}", stats[f"latency_ms_{q}"], "ms"))
        records.append((name, f"{name}_throughput", stats["throughput"], "tokens/s"))
    return [
        {
            "bench": "neuron",
            "case": case,
            "impl": "dsv3_nxdi",
            "metric": metric,
            "value": float(value),
            "unit": unit,
            "transformers": transformers.__version__,
        }
        for _, metric, value, unit in records
    ]


def _report(records: list[dict[str, Any]]) -> None:
    for r in records:
        print(f"{r['bench']:<8} {r['case']:<24} {r['metric']:<18} {r['value']:>12.4g} {r['unit']}")
    out = os.environ.get("DSV3_NEURON_BENCH_OUT")
    if out:
        path = Path(out)
        previous = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(previous + records, indent=1))


def test_tiny_benchmark(tiny: dict[str, Any]) -> None:
    records = _benchmark_records(tiny["model"], f"tiny-tp{TP}")
    assert all(r["value"] > 0 for r in records)
    _report(records)


def test_tiny_serves_with_the_plugin_default_config(tiny: dict[str, Any], tmp_path: Path) -> None:
    """The NeuronConfig vLLM's Neuron plugin builds by default (`serving_driver.PLUGIN_DEFAULT_OPTIONS`: prefix
    caching, block KV, continuous batching over 4 slots, bucketing, dynamic on-device sampling), compiled in
    bf16 and driven as the plugin's runner drives it: greedy requests equal transformers alone, sampled ones
    stay in the sampler's allowed set (the CPU suite checks the same schedule in fp32)."""
    from dsv3_model.neuron import Dsv3NeuronConfig

    checkpoint = tiny["root"] / "hf"
    neuron_config = Dsv3NeuronConfig(**serving_driver.PLUGIN_DEFAULT_OPTIONS, tp_degree=TP, torch_dtype=torch.bfloat16)
    model = _build(checkpoint, neuron_config)
    model.compile(str(tmp_path / "compiled"))
    model.load(str(tmp_path / "compiled"))
    requests = serving_driver.batching_requests(tiny["cfg"], serving_driver.PLUGIN_SAMPLING)
    serving_driver.run_schedule(model, requests)
    assert_plugin_serving(tiny["hf"], requests, {"requests": serving_driver.results(requests)})


@pytest.mark.skipif(not os.environ.get("DSV3_NEURON_MODEL_DIR"), reason="set DSV3_NEURON_MODEL_DIR for the 671B recipe")
def test_671b_recipe_generates_and_benchmarks() -> None:
    from dsv3_model.neuron import Dsv3NeuronConfig

    checkpoint = Path(os.environ["DSV3_NEURON_MODEL_DIR"])
    compiled = Path(os.environ.get("DSV3_NEURON_COMPILED_DIR", "/scratch/dsv3_traced"))
    tp = int(os.environ.get("DSV3_NEURON_671B_TP", "64"))
    neuron_config = Dsv3NeuronConfig(
        tp_degree=tp,
        batch_size=1,
        ctx_batch_size=1,
        tkg_batch_size=1,
        seq_len=512,
        torch_dtype=torch.bfloat16,
        logical_nc_config=2,
        enable_bucketing=False,
        save_sharded_checkpoint=True,
        skip_sharding=True,  # NxDI would load the whole checkpoint to shard it; `dsv3 shard` streams
    )
    model = _build(checkpoint, neuron_config)
    if not (compiled / "model.pt").exists():
        model.compile(str(compiled))
    if not (compiled / "weights" / f"tp{tp - 1}_sharded_checkpoint.safetensors").exists():
        _dsv3_shard(checkpoint, compiled, tp)
    model.load(str(compiled))
    golden = os.environ.get("DSV3_NEURON_GOLDEN_LOGITS")
    ids_BS = torch.load(os.environ["DSV3_NEURON_GOLDEN_IDS"]) if golden else torch.tensor([[0, 100, 200, 300]])
    first = harness.greedy_tokens(model, ids_BS, torch.ones_like(ids_BS), 16)
    second = harness.greedy_tokens(model, ids_BS, torch.ones_like(ids_BS), 16)
    assert first.tolist() == second.tolist()
    assert torch.isfinite(harness.prefill_last_logits(model, ids_BS)).all()
    if golden:
        import transformers
        from neuronx_distributed_inference.utils.accuracy import check_accuracy_logits_v2

        check_accuracy_logits_v2(
            neuron_model=model,
            expected_logits=torch.load(golden),
            inputs_input_ids=ids_BS,
            inputs_attention_mask=torch.ones_like(ids_BS),
            generation_config=transformers.GenerationConfig(do_sample=False, top_k=1),
            divergence_difference_tol=0.001,
            num_tokens_to_check=32,
        )
    _report(_benchmark_records(model, f"deepseek-v3-tp{tp}"))

"""MoE layer forward on the medium config (hidden 1024, 64 experts, 6 active, 8 groups, top-4 groups,
I = 256, one shared expert): dsv3's `DeepseekMoE` against transformers' `DeepseekV3MoE` with the same
weights, for 1, 16 and 256 tokens, fp32.

    python benchmarks/bench_moe.py --out FILE.json [--quick]

Implementations: `dsv3` (what a loaded model runs by default: the measured CPU kernels of
`dsv3_model.cpu_kernels` over the active experts); `dsv3-reference` (the plain layers); `transformers`
(4.57: a loop over all 64 experts; 5.x: its model default, `grouped_mm`); `transformers-eager` under
5.x (a loop over the hit experts). Each step routes a fresh draw of tokens (a fixed pool cycled, so
every implementation sees the same inputs and the chosen experts change between steps, as in decoding,
rather than staying cache-hot).
Median of repeated timings after warmup, the implementations taking turns.

`floor-gemv` is a lower bound for any implementation that reads each needed weight once: the bytes of the
router, the shared expert and every distinct routed expert the step's tokens hit (averaged over the pool),
divided by the bandwidth a matrix-vector product achieves on weights that are not cache-resident (measured
here). At 1 token it is 6 experts x 3 MiB + 3 MiB: decode is bound by reading the expert weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from _common import interleaved_medians

from dsv3_blocks.packed_linear import pack_weight, packed_product
from dsv3_config import preset
from dsv3_model.cpu_kernels import swap_measured_kernels
from dsv3_moe import DeepseekMoE, build_deepseek_moe, load_hf_moe_state_dict
from dsv3_moe.eager_choice import chosen_kernels
from dsv3_testing.hf_moe import hf_moe_block

BENCH = "moe"
POOL = 8  # distinct inputs cycled through per case


def cycling(module: torch.nn.Module, inputs: list[torch.Tensor]) -> Callable[[], object]:
    state = {"i": 0}

    def step() -> object:
        state["i"] = (state["i"] + 1) % len(inputs)
        return module(inputs[state["i"]])

    return step


def gemv_bandwidth(hidden: int, rows: int) -> float:
    """Bytes per second a matrix-vector product reads from a pool of weights far larger than the caches:
    the faster of `F.linear` and the oneDNN-prepacked product (`dsv3_blocks.packed_linear`) here."""
    pool = torch.randn(64, rows, hidden)
    packed = [pack_weight(matrix) for matrix in pool] if torch.backends.mkldnn.is_available() else []
    vector = torch.randn(1, hidden)
    state = {"i": 0}

    def plain() -> object:
        state["i"] = (state["i"] + 1) % len(pool)
        return torch.nn.functional.linear(vector, pool[state["i"]])

    def prepacked() -> object:
        state["i"] = (state["i"] + 1) % len(pool)
        return packed_product(vector, packed[state["i"]])

    forms = {"plain": plain, "packed": prepacked} if packed else {"plain": plain}
    seconds = min(interleaved_medians(forms, warmup=8, reps=64).values())
    return pool[0].numel() * pool.element_size() / seconds


def floor_bytes(cfg: Any, ours: DeepseekMoE, inputs: list[torch.Tensor]) -> float:
    """Mean bytes of router + shared expert + distinct hit experts per step."""
    expert_bytes = 3 * cfg.moe_intermediate_size * cfg.hidden_size * 4
    fixed = cfg.n_routed_experts * cfg.hidden_size * 4 + cfg.n_shared_experts * expert_bytes
    hits = [ours.gate(x)[0].unique().numel() for x in inputs]
    return fixed + expert_bytes * statistics.mean(hits)


def hf_implementations(cfg: Any) -> dict[str, Any]:
    block = hf_moe_block(cfg, seed=0)
    if int(transformers.__version__.split(".")[0]) < 5:
        return {"transformers": block}
    eager = hf_moe_block(cfg, seed=0)
    block.experts.config = block.config.__class__.from_dict(block.config.to_dict())
    block.experts.config._experts_implementation = "grouped_mm"  # what a 5.x model picks by default
    eager.experts.config = block.config.__class__.from_dict(block.config.to_dict())
    eager.experts.config._experts_implementation = "eager"
    return {"transformers": block, "transformers-eager": eager}


def run(token_counts: list[int], warmup: int, reps: int) -> list[dict[str, Any]]:
    cfg = preset("medium")
    impls = hf_implementations(cfg)
    reference = build_deepseek_moe(cfg).eval()
    load_hf_moe_state_dict(reference, impls["transformers"].state_dict(), cfg)
    ours = copy.deepcopy(reference)  # what a loaded model runs by default: the measured CPU kernels
    swap_measured_kernels(ours, cfg.num_experts_per_tok)
    impls = {"dsv3-reference": reference, **impls}
    records: list[dict[str, Any]] = []
    bandwidth = gemv_bandwidth(cfg.hidden_size, 2 * cfg.moe_intermediate_size)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tokens in token_counts:
            inputs = [torch.randn(1, tokens, cfg.hidden_size, generator=generator) for _ in range(POOL)]
            for name, block in impls.items():  # same answers before timing
                torch.testing.assert_close(ours(inputs[0]), block(inputs[0]), rtol=0, atol=1e-4, msg=name)
            steps = {"dsv3": cycling(ours, inputs), **{name: cycling(b, inputs) for name, b in impls.items()}}
            medians = interleaved_medians(steps, warmup=warmup, reps=reps)
            medians["floor-gemv"] = floor_bytes(cfg, ours, inputs) / bandwidth
            for impl, seconds in medians.items():
                records.append(
                    {
                        "bench": BENCH,
                        "case": f"forward_{tokens}tok",
                        "impl": impl,
                        "metric": "latency",
                        "value": 1e3 * seconds,
                        "unit": "ms",
                        "transformers": transformers.__version__,
                    }
                )
    return records


def print_table(records: list[dict[str, Any]]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"transformers {transformers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average {load} (other processes share the cores: compare ratios, not absolute times)"
    )
    print(f"{'case':<18}{'impl':<22}{'ms':>10}{'it / dsv3':>12}")
    ours = {r["case"]: r["value"] for r in records if r["impl"] == "dsv3"}
    for r in records:
        print(f"{r['case']:<18}{r['impl']:<22}{r['value']:>10.3f}{r['value'] / ours[r['case']]:>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the records")
    parser.add_argument("--quick", action="store_true", help="few repetitions")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2, the project's setting)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warmup, reps = (2, 5) if args.quick else (5, 30)
    records = run([1, 16, 256], warmup=warmup, reps=reps)
    print_table(records)
    print(f"dsv3 eager expert kernels chosen by the one-time measurement: {chosen_kernels()}")
    print("floor-gemv: bytes of the weights a step must read / measured matrix-vector bandwidth (cold weights)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()

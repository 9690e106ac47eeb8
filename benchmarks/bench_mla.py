"""MLA decode-step latency on the medium config: dsv3's absorbed and expanded paths against transformers'
`DeepseekV3Attention` (eager and sdpa), at contexts 512, 2K and 8K, with cache bytes per token and the
memory-bandwidth floor (bytes of cache + attention weights read once / measured read bandwidth, both the
streaming `sum` bandwidth and the bandwidth a matrix-vector product achieves) and a roofline floor that
also counts the absorbed decode's FLOPs at the measured matmul rate: with 16 heads sharing each cached
entry the attention does ~8 FLOP per cached byte, so on a 2-core CPU it is compute-bound, not memory-bound.

    python benchmarks/bench_mla.py --out FILE.json [--quick]

One layer, batch 1, fp32 (bf16 matmuls are slower than fp32 on CPUs without bf16 instructions;
docs/environment.md). Each case times one decode step at a fixed context: before every step our cache's
lengths and HF's cache tensors are reset to the same `ctx` tokens, so the step always attends to
ctx + 1 keys. Median of repeated timings after warmup, the implementations taking turns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from _common import interleaved_medians, measured_read_bandwidth, median_seconds, record, write_records

from dsv3_blocks import default_linear_factory
from dsv3_config import ModelConfig, preset
from dsv3_mla import LatentCache, MultiHeadLatentAttention
from dsv3_testing.hf_attention import HfAttentionRunner, hf_attention

BENCH = "mla"


def gemv_bandwidth(num_bytes: int = 256 * 2**20) -> float:
    """Bytes per second of weight read by a matrix-vector product (what decode's matmuls achieve)."""
    weight = torch.randn(num_bytes // 4 // 4096, 4096)
    vector = torch.randn(1, 4096)
    return num_bytes / median_seconds(lambda: torch.nn.functional.linear(vector, weight), repeats=7, warmup=2)


def ours_step(mla: MultiHeadLatentAttention, ctx: int, path: str) -> tuple[Callable[[], object], int]:
    cfg = mla.cfg
    cache = LatentCache.empty(cfg, 1, ctx + 1, dtype=torch.float32)
    cache.buffer_BTC.normal_()
    hidden = torch.randn(1, 1, cfg.hidden_size)
    position = torch.tensor([[ctx]])

    def step() -> object:
        cache.lengths_B.fill_(ctx)
        return mla(hidden, position, cache, path=path)  # type: ignore[arg-type]

    return step, cache.bytes_per_token()


def hf_step(attn: Any, ctx: int) -> tuple[Callable[[], object], int]:
    """A decode step over a cache of `ctx` random entries in whatever layout this transformers caches."""
    runner = HfAttentionRunner(attn)
    hidden = torch.randn(1, 1, attn.config.hidden_size)
    runner.decode(hidden)  # one token tells us the cache layout of this version
    layer = runner.cache.layers[0]
    keys = torch.randn(*layer.keys.shape[:2], ctx, layer.keys.shape[-1])
    values = torch.randn(*layer.values.shape[:2], ctx, layer.values.shape[-1])
    bytes_per_token = (keys[0, :, 0].numel() + values[0, :, 0].numel()) * keys.element_size()

    def step() -> object:
        layer.keys, layer.values = keys, values
        runner.length = ctx
        return runner.decode(hidden)

    return step, bytes_per_token


def matmul_flops(size: int = 1024) -> float:
    """fp32 floating-point operations per second of a large square matmul (the machine's practical peak)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats=7, warmup=2)


def absorbed_decode_flops(cfg: ModelConfig, num_params: int, ctx: int) -> int:
    """One token, one layer: every weight once (kv_b_proj as W_UK and W_UV), then scores over the
    whole [c_kv | k_pe] entry and the weighted sum of c_kv, for every head."""
    return 2 * num_params + 2 * cfg.num_attention_heads * (ctx + 1) * (cfg.latent_cache_width + cfg.kv_lora_rank)


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def run(cfg: ModelConfig, contexts: list[int], warmup: int, reps: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    bandwidth = measured_read_bandwidth()
    gemv = gemv_bandwidth()
    flops = matmul_flops()
    records.append(record(BENCH, "machine", "torch-sum", "read_bandwidth", bandwidth / 1e9, "GB/s"))
    records.append(record(BENCH, "machine", "torch-gemv", "read_bandwidth", gemv / 1e9, "GB/s"))
    records.append(record(BENCH, "machine", "torch-matmul", "fp32_flops", flops / 1e9, "GFLOP/s"))
    impls: dict[str, Any] = {}
    for implementation in ("eager", "sdpa"):
        attn = hf_attention(cfg, seed=0)
        attn.config._attn_implementation = implementation
        impls[f"hf-{implementation}"] = attn
    # the projections dsv3-model builds (plain nn.Linear, as both packages' default factories)
    ours = MultiHeadLatentAttention(cfg, linear_factory=default_linear_factory)
    ours.load_state_dict(impls["hf-eager"].state_dict(), strict=True)
    ours.eval()
    with torch.no_grad():
        for ctx in contexts:
            case = f"decode_ctx{ctx}"
            steps: dict[str, tuple[Callable[[], object], int]] = {
                "dsv3-absorbed": ours_step(ours, ctx, "absorbed"),
                "dsv3-expanded": ours_step(ours, ctx, "expanded"),
                **{name: hf_step(attn, ctx) for name, attn in impls.items()},
            }
            medians = interleaved_medians({name: step for name, (step, _) in steps.items()}, warmup=warmup, reps=reps)
            for impl, (_, cache_bytes) in steps.items():
                records.append(record(BENCH, case, impl, "latency", 1e3 * medians[impl], "ms"))
                records.append(record(BENCH, case, impl, "cache_bytes_per_token", float(cache_bytes), "B"))
            floor_bytes = (ctx + 1) * steps["dsv3-absorbed"][1] + weight_bytes(ours)
            records.append(record(BENCH, case, "floor", "latency", 1e3 * floor_bytes / bandwidth, "ms"))
            records.append(record(BENCH, case, "floor-gemv", "latency", 1e3 * floor_bytes / gemv, "ms"))
            num_params = sum(p.numel() for p in ours.parameters())
            compute_seconds = absorbed_decode_flops(cfg, num_params, ctx) / flops
            records.append(
                record(
                    BENCH, case, "floor-roofline", "latency", 1e3 * max(floor_bytes / bandwidth, compute_seconds), "ms"
                )
            )
    return records


def print_table(records: list[dict[str, Any]]) -> None:
    latency = {(r["case"], r["impl"]): r["value"] for r in records if r["metric"] == "latency"}
    cache = {(r["case"], r["impl"]): r["value"] for r in records if r["metric"] == "cache_bytes_per_token"}
    print(f"transformers {transformers.__version__}, torch threads {torch.get_num_threads()}")
    print(f"{'case':<16}{'impl':<16}{'ms/step':>10}{'cache B/tok':>13}{'hf-sdpa / it':>14}{'it / floor':>12}")
    for case, impl in latency:
        value = latency[(case, impl)]
        vs_hf = latency[(case, "hf-sdpa")] / value
        vs_floor = value / latency[(case, "floor")]
        cache_text = f"{cache[(case, impl)]:.0f}" if (case, impl) in cache else "-"
        print(f"{case:<16}{impl:<16}{value:>10.3f}{cache_text:>13}{vs_hf:>14.2f}{vs_floor:>12.2f}")
    for r in records:
        if r["case"] == "machine":
            print(f"measured {r['metric']} ({r['impl']}): {r['value']:.1f} {r['unit']}")
    print(
        "floor: bytes(cache + attention weights) / torch-sum bandwidth; floor-gemv: the same / torch-gemv "
        "bandwidth;\nfloor-roofline: max(floor, absorbed decode FLOPs / torch-matmul FLOP/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file for the records")
    parser.add_argument("--quick", action="store_true", help="contexts 512 and 2K, few repetitions")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if args.quick:
        records = run(preset("medium"), [512, 2048], warmup=2, reps=5)
    else:
        records = run(preset("medium"), [512, 2048, 8192], warmup=5, reps=30)
    write_records(Path(args.out), records)
    print_table(records)


if __name__ == "__main__":
    main()

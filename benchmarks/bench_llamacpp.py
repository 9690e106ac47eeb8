"""llama.cpp on the medium benchmark config, F32 / BF16 / Q8_0 (and Q8_0 with a BF16 output matrix),
measured as bench_model.py measures dsv3 and transformers, so that `report.py` sets them side by side (same
bench, same case names, same metrics).

The model: `make_checkpoint(preset("medium"), fp8=True, seed=0)`, the FP8 checkpoint dsv3 loads, dequantized
to fp32 by `dsv3 convert`'s code; llama.cpp's own converter (`convert_hf_to_gguf.py` of the sdist it was
built from) writes F32, BF16 and Q8_0 GGUF files from that fp32 checkpoint, and llama.cpp's quantizer a fourth
from the F32 one: Q8_0 with the output matrix in BF16 (`Q8_0 BF16-output`), as the FP8 checkpoint keeps its
`lm_head`, so that it reads per step the bytes dsv3's FP8-resident step reads. Before any timing, llama.cpp's
F32 logits are checked against transformers on the same fp32 checkpoint (max |difference| / max |reference|
over every position of a 32-token prompt, at most `LOGITS_TOLERANCE`; llama.cpp keeps its KV cache in
f16), so the comparison is of the same model; when that fails no llama.cpp timing is reported and the
script exits 1.

Per GGUF type, in its own child process (its peak RSS its own), `--rounds` interleaved rounds (median):
prefill tokens/s (one 256-token batch, median of 3), decode tokens/s (1 / median of the per-step times of
two greedy 64-token continuations: the argmax read on the host, then one `llama_decode` of one token),
2 threads. Bytes per decode step: the GGUF's tensors with the routed experts at top-k / experts and one
embedding row, plus the f16 latent cache at the mean context; against the read bandwidth measured here
(`_common.measured_read_bandwidth`, 2 threads) that gives the bandwidth floor. On a CPU with AMX, the Q8_0
files (and F16) run with weight repacking off (their AMX kernels abort on this model), said in the output.

Right after each converted type's child, in the same round, dsv3's fastest decode at that precision runs in
a child of its own (bench_model.py's: `ours-compiled` fp32 after F32, bf16 after BF16, `ours-fp8-compiled` in
an fp32 model after Q8_0), recorded as `<impl> same rounds`, with the median over the rounds of the
per-round ratio of the two decode rates (`decode_vs_llamacpp_per_round`, what `report.py`'s goals read):
this shared host's load moves within minutes, and each ratio compares runs about a minute apart. Q8_0
BF16-output runs right after that FP8 run, its ratio to it `decode_vs_llamacpp_same_bytes_per_round` (shown
beside the goal, not the goal: the issue's competitor is plain Q8_0).

Usage: python benchmarks/bench_llamacpp.py --out FILE.json [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    BENCH_THREADS,
    cpu_flags,
    has_amx,
    measured_read_bandwidth,
    peak_rss_bytes,
    record,
    whole_model_case,
    whole_model_records,
    write_records,
)
from _llamacpp import (
    AMX_ABORTING,
    GGUF_NAMES,
    KV_CACHE_ITEMSIZE,
    OUTTYPES,
    QUANTIZED,
    ROOT,
    LlamaCppModel,
    active_bytes_per_token,
    convert,
    installed_version,
    quantize,
)

BENCH = "model"  # bench_model.py's tables: llama.cpp rows beside dsv3's and transformers'
CASE_DTYPE = {"f32": "float32", "bf16": "bfloat16", "q8_0": "q8_0", "q8_0-bf16-output": "q8_0"}  # bench_model.py's
# max |llama.cpp F32 - transformers fp32| / max |transformers| over a 32-token prompt's logits (2026-12-01,
# AMD EPYC avx512_bf16: exact 2.6e-6; timed 2.1e-3, 1.1e-3 of it from f16 K/V alone, the rest from flash
# attention's f16 arithmetic on a CPU). exact: an f32 KV cache and no flash attention, rounding order
# alone; timed: llama.cpp's defaults, f16 K and V (2**-11 relative each) through 4 layers.
LOGITS_TOLERANCE = {"exact": 1e-4, "timed": 5e-3}
CHECK_TOKENS = 32
# The dsv3 child run right after each GGUF type's, in the same round (bench_model.py's `--child IMPL DTYPE`):
# dsv3's fastest decode at that precision, so that each round gives a ratio of two runs minutes apart at most.
PAIRED_DSV3 = {
    "f32": ("ours-compiled", "float32"),
    "bf16": ("ours-compiled", "bfloat16"),
    "q8_0": ("ours-fp8-compiled", "float32"),
}
PAIRED_SUFFIX = " same rounds"
# A GGUF type run right after another's dsv3 child and compared with that one: Q8_0 BF16-output with the
# FP8-resident run that follows Q8_0, the two 8-bit files' ratios from one dsv3 run each round
SAME_BYTES_AS = {"q8_0-bf16-output": "q8_0"}
N_CTX = 512


def repack_for(outtype: str) -> bool:
    return not (has_amx() and outtype in AMX_ABORTING)


def impl_name(outtype: str) -> str:
    return f"llama.cpp {GGUF_NAMES[outtype]}" + ("" if repack_for(outtype) else " repack-off")


def prompt_ids(length: int, vocab_size: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(0).integers(0, vocab_size, length)]


def prepare(work: Path) -> dict[str, Path]:
    """The FP8 checkpoint, its fp32 HF dequantization, that one's three GGUF files and the Q8_0 BF16-output
    one quantized from the F32 file, under `work`, each made under a temporary name and renamed when complete
    (kept for the next run: they depend only on the preset, the seed and the tools)."""
    import torch

    from dsv3_config import preset
    from dsv3_weights import convert_checkpoint, make_checkpoint

    cfg = preset("medium")
    work = work / f"medium-{hashlib.sha256(json.dumps(cfg.to_hf(), sort_keys=True).encode()).hexdigest()[:10]}"
    work.mkdir(parents=True, exist_ok=True)  # one folder per medium config: a changed preset starts anew
    fp8, fp32 = work / "fp8-seed0", work / "fp32-seed0"
    if not fp8.exists():
        partial = _fresh(work / "fp8-seed0.partial")
        make_checkpoint(partial, cfg, fp8=True, seed=0, progress=False)
        partial.rename(fp8)
    if not fp32.exists():
        partial = _fresh(work / "fp32-seed0.partial")
        convert_checkpoint(fp8, partial, dtype=torch.float32, mtp="drop", progress=False)
        config = json.loads((partial / "config.json").read_text())
        config["architectures"] = ["DeepseekV3ForCausalLM"]  # the converter picks its model class by this key
        (partial / "config.json").write_text(json.dumps(config, indent=1))
        partial.rename(fp32)
    paths = {"hf": fp32, "fp8": fp8}
    for outtype in OUTTYPES:
        paths[outtype] = _gguf(work, outtype, "--convert", str(fp32))
    for gguf_type in QUANTIZED:
        paths[gguf_type] = _gguf(work, gguf_type, "--quantize", str(paths["f32"]))
    return paths


def _gguf(work: Path, gguf_type: str, how: str, src: str) -> Path:
    """The `gguf_type` file under `work`, made first if missing by this script's `how` child (`--convert` or
    `--quantize`) from `src`, under a temporary name renamed when complete, its log beside it."""
    path = work / f"{gguf_type}-llama.cpp-{installed_version()}.gguf"
    if not path.exists():
        partial = path.with_suffix(".partial")
        start = time.perf_counter()
        log = path.with_suffix(".log")
        with log.open("w") as stderr:
            _child(how, src, str(partial), gguf_type, stderr=stderr)
        partial.rename(path)
        seconds = time.perf_counter() - start
        print(f"  made {GGUF_NAMES[gguf_type]} ({how[2:]}) in {seconds:.0f} s (log: {log})", flush=True)
    return path


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _child(*args: str, stderr: IO[str] | None = None) -> dict[str, Any] | None:
    """This script in a child process (`--convert`, `--quantize`, `--check`, `--child`); its last stdout line
    (JSON)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(BENCH_THREADS)}
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    ).stdout
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None


def check_logits(hf_dir: Path, f32_gguf: Path) -> dict[str, float]:
    """max |llama.cpp F32 - transformers fp32| / max |transformers| over every position, for llama.cpp
    exact (f32 KV cache, no flash attention: the model) and as timed (its defaults)."""
    import torch

    from dsv3_model.hf_bridge import load_hf_causal_lm

    torch.set_num_threads(BENCH_THREADS)
    reference = load_hf_causal_lm(hf_dir, torch.float32)
    ids = prompt_ids(CHECK_TOKENS, reference.config.vocab_size)
    with torch.inference_mode():
        expected_TV = reference(torch.tensor([ids])).logits[0].float().numpy()
    errors = {}
    for setting, exact in (("exact", True), ("timed", False)):
        model = LlamaCppModel(f32_gguf, n_ctx=N_CTX, threads=BENCH_THREADS, repack=repack_for("f32"), exact=exact)
        got_TV = model.decode(ids, all_logits=True)
        model.close()
        errors[setting] = float(np.abs(got_TV - expected_TV).max() / np.abs(expected_TV).max())
    return errors


def run_one(outtype: str, gguf_path: Path, prompt_len: int, new_tokens: int) -> dict[str, float]:
    from dsv3_config import preset

    cfg = preset("medium")
    model = LlamaCppModel(gguf_path, n_ctx=N_CTX, threads=BENCH_THREADS, repack=repack_for(outtype))
    ids = prompt_ids(prompt_len, cfg.vocab_size)

    def prefill() -> np.ndarray:
        model.clear()
        return model.decode(ids)

    def decode_steps() -> list[float]:
        logits_1V = prefill()
        seconds = []
        for _ in range(new_tokens - 1):
            start = time.perf_counter()
            logits_1V = model.decode([int(logits_1V[0].argmax())])
            seconds.append(time.perf_counter() - start)
        return seconds

    prefill()  # warm-up: pages the weights in
    prefill_times = []
    for _ in range(3):
        start = time.perf_counter()
        prefill()
        prefill_times.append(time.perf_counter() - start)
    decode_steps()  # warm-up
    decode_s = statistics.median(decode_steps() + decode_steps())
    model.close()
    cache_bytes = cfg.latent_cache_width * cfg.num_hidden_layers * KV_CACHE_ITEMSIZE
    weight_bytes = active_bytes_per_token(gguf_path, cfg.n_routed_experts, cfg.num_experts_per_tok)
    bytes_per_token = weight_bytes + cache_bytes * (prompt_len + new_tokens / 2)
    return {
        "prefill_tok_s": prompt_len / statistics.median(prefill_times),
        "decode_tok_s": 1.0 / decode_s,
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "cache_bytes_per_token": cache_bytes,
        "achieved_gb_s": bytes_per_token / decode_s / 1e9,
        "bytes_per_token": bytes_per_token,
    }


def machine_line() -> str:
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx")
    flags = " ".join(sorted(f for f in cpu_flags() if f.startswith(wanted)))
    aborting = "/".join(GGUF_NAMES.get(t, t.upper()) for t in sorted(AMX_ABORTING))
    repack = f"AMX: {aborting} with weight repacking off" if has_amx() else "no AMX: weight repacking on (default)"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"flags {flags}; threads {BENCH_THREADS}; llama-cpp-python {installed_version()}; {repack}; "
        f"load average {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "llamacpp", help="checkpoints and GGUF files")
    parser.add_argument("--child", nargs=2, metavar=("OUTTYPE", "GGUF"))
    parser.add_argument("--convert", nargs=3, metavar=("SRC", "DST", "OUTTYPE"))
    parser.add_argument("--quantize", nargs=3, metavar=("F32_GGUF", "DST", "GGUF_TYPE"))
    parser.add_argument("--check", nargs=2, metavar=("HF_DIR", "F32_GGUF"))
    args = parser.parse_args()
    prompt_len, new_tokens = (32, 8) if args.quick else (256, 64)
    if args.convert:
        convert(Path(args.convert[0]), Path(args.convert[1]), args.convert[2])
        return 0
    if args.quantize:
        quantize(Path(args.quantize[0]), Path(args.quantize[1]), args.quantize[2])
        return 0
    if args.check:
        print(json.dumps(check_logits(Path(args.check[0]), Path(args.check[1]))))
        return 0
    if args.child:
        print(json.dumps(run_one(args.child[0], Path(args.child[1]), prompt_len, new_tokens)))
        return 0
    if importlib.util.find_spec("llama_cpp") is None:
        print("bench_llamacpp: llama-cpp-python is not installed (nox -s bench builds it)", file=sys.stderr)
        return 1
    rounds = args.rounds or (1 if args.quick else 3)
    print(machine_line(), flush=True)
    paths = prepare(args.work)
    bandwidth = measured_read_bandwidth()
    records = [record(BENCH, "machine", "memory (llama.cpp run)", "read_bandwidth", bandwidth / 1e9, "GB/s")]
    check = _child("--check", str(paths["hf"]), str(paths["f32"]))
    assert check is not None
    failed = []
    for setting, error in check.items():
        tolerance = LOGITS_TOLERANCE[setting]
        print(f"  llama.cpp F32 {setting} logits vs transformers fp32: max rel error {error:.2e} (<= {tolerance:.0e})")
        case = f"medium float32 logits {CHECK_TOKENS} tokens, llama.cpp {setting}"
        records.append(record(BENCH, case, impl_name("f32"), "max_rel_error_vs_hf", error, "rel"))
        if error > tolerance:
            failed.append(f"{setting} {error:.2e} > {tolerance:.0e}")
    if failed:
        write_records(args.out, records)
        print(
            f"FAILED: llama.cpp F32 logits differ from transformers fp32 ({'; '.join(failed)} relative): "
            "not the same model, no llama.cpp timing reported",
            file=sys.stderr,
        )
        return 1
    from bench_model import run_child  # here, not at the top: llama.cpp's children need no torch

    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    paired: dict[str, list[dict[str, float]]] = defaultdict(list)
    quick = ["--quick"] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as cache:
        for _ in range(rounds):  # the GGUF types take turns, so a neighbour's load falls on all of them alike
            for outtype in GGUF_NAMES:
                load_before = os.getloadavg()[0]
                result = _child("--child", outtype, str(paths[outtype]), *quick)
                assert result is not None
                result["load_average_1min"] = load_before
                runs[outtype].append(result)
                line = f"  {impl_name(outtype):<30} decode {result['decode_tok_s']:7.1f} tok/s  load {load_before:.1f}"
                if outtype in PAIRED_DSV3:
                    ours = run_child(*PAIRED_DSV3[outtype], paths["fp8"], args.quick, Path(cache))
                    paired[outtype].append(ours)
                    line += f"; then {' '.join(PAIRED_DSV3[outtype])} {ours['decode_tok_s']:7.1f} tok/s"
                print(line, flush=True)
    for outtype, results in runs.items():
        case = whole_model_case(CASE_DTYPE[outtype], prompt_len, new_tokens)
        records += whole_model_records(BENCH, case, impl_name(outtype), results, bandwidth)
        ours_type = SAME_BYTES_AS.get(outtype, outtype)
        impl, dtype_name = PAIRED_DSV3[ours_type]
        ours_case = whole_model_case(dtype_name, prompt_len, new_tokens)
        if ours_type == outtype:
            records += whole_model_records(BENCH, ours_case, impl + PAIRED_SUFFIX, paired[outtype], bandwidth)
        ratios = [o["decode_tok_s"] / r["decode_tok_s"] for o, r in zip(paired[ours_type], results, strict=True)]
        metric = "decode_vs_llamacpp_per_round" if ours_type == outtype else "decode_vs_llamacpp_same_bytes_per_round"
        records.append(record(BENCH, ours_case, impl + PAIRED_SUFFIX, metric, statistics.median(ratios), "x"))
    write_records(args.out, records)
    print(machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())

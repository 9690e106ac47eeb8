"""llama.cpp as the benchmarks drive it: GGUF conversion with its own converter and quantizer, and a model
run through llama-cpp-python's C API.

The C API, not the high-level `Llama` class: `Llama` cannot turn weight repacking off (`use_extra_bufts`),
which an AMX CPU needs for Q8_0 and F16 (their repacked kernels abort on this model), and its per-call
bookkeeping is not llama.cpp's cost. The converter is the `convert_hf_to_gguf.py` and `gguf-py` of the
same llama-cpp-python sdist the library was built from (`nox -s bench` unpacks it under `.bench/`), so the
GGUF files are those llama.cpp's own tools write for this llama.cpp commit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# outtype (the converter's name) -> llama.cpp's name for it, and its KV cache: llama.cpp's default, f16
OUTTYPES = {"f32": "F32", "bf16": "BF16", "q8_0": "Q8_0"}
# GGUF types llama.cpp's quantizer writes from the F32 file (`quantize`) -> llama.cpp's name for it. Q8_0 with
# the output matrix (`lm_head`) kept in BF16, as DeepSeek's FP8 checkpoints keep theirs: the bytes a step of
# dsv3's FP8-resident model reads, where plain Q8_0 reads an 8-bit `lm_head` (the medium preset's is 65% of
# the step's weight bytes in BF16, a DeepSeek-V3's about 5%)
QUANTIZED = {"q8_0-bf16-output": "Q8_0 BF16-output"}
GGUF_NAMES = {**OUTTYPES, **QUANTIZED}
GGML_TYPE_BF16 = 30  # ggml.h's enum ggml_type, which llama-cpp-python does not export
KV_CACHE_ITEMSIZE = 2  # the timed runs keep llama.cpp's default f16 KV cache
# GGML types whose AMX / repacked CPU kernels abort on this model (seen on a Sapphire Rapids-class CPU):
# with AMX they run with repacking off. BF16 and F32 have no such kernels.
AMX_ABORTING = {"q8_0", "q8_0-bf16-output", "f16"}


def installed_version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def converter_dir() -> Path:
    """`vendor/llama.cpp` of the unpacked sdist matching the installed llama-cpp-python."""
    version = installed_version()
    path = ROOT / ".bench" / "llama-cpp-python" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (path / "convert_hf_to_gguf.py").exists():
        raise SystemExit(f"{path}: no convert_hf_to_gguf.py for llama-cpp-python {version}; `nox -s bench` unpacks it")
    return path


def convert(src: Path, dst: Path, outtype: str) -> None:
    """Run llama.cpp's converter on the HF checkpoint `src`, writing `dst` (call in a child process: it
    patches the converter). A random model has no tokenizer: the vocabulary is llama.cpp's "none" type
    with `vocab_size` dummy tokens (the model is fed token ids; timing does not depend on the vocabulary)."""
    tools = converter_dir()
    sys.path[:0] = [str(tools), str(tools / "gguf-py")]
    import convert_hf_to_gguf
    from conversion.deepseek import DeepseekV2Model  # DeepseekV3ForCausalLM's converter class

    def trivial_vocab(self: Any) -> None:
        self.gguf_writer.add_tokenizer_model("none")
        self.gguf_writer.add_vocab_size(self.hparams["vocab_size"])

    DeepseekV2Model.set_vocab = trivial_vocab  # type: ignore[method-assign]
    sys.argv = ["convert_hf_to_gguf.py", str(src), "--outfile", str(dst), "--outtype", outtype]
    convert_hf_to_gguf.main()


def quantize(src: Path, dst: Path, gguf_type: str) -> None:
    """Write `dst`, of a `QUANTIZED` type, from the F32 GGUF `src` with llama.cpp's own quantizer: what
    `llama-quantize --output-tensor-type bf16 SRC DST Q8_0` does (call in a child process: it prints every
    tensor)."""
    import llama_cpp

    if gguf_type not in QUANTIZED:
        raise ValueError(f"{gguf_type}: not one of llama.cpp's quantized types here ({', '.join(QUANTIZED)})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.output_tensor_type = GGML_TYPE_BF16
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if status != 0:
        raise RuntimeError(f"{src}: llama.cpp's quantizer returned {status} writing {gguf_type}")


def active_bytes_per_token(gguf_path: Path, experts: int, experts_per_token: int) -> float:
    """Weight bytes one decode step reads, from the GGUF file itself: every tensor, the routed experts'
    stacked tensors (`*_exps`) at `experts_per_token / experts`, and one row of the token embedding."""
    tools = converter_dir()
    sys.path.insert(0, str(tools / "gguf-py"))
    from gguf import GGUFReader

    total = 0.0
    for tensor in GGUFReader(gguf_path).tensors:
        if "_exps" in tensor.name:
            total += tensor.n_bytes * experts_per_token / experts
        elif tensor.name == "token_embd.weight":
            total += tensor.n_bytes / int(tensor.shape[-1])  # gguf lists the vocab dimension last
        else:
            total += tensor.n_bytes
    return total


class LlamaCppModel:
    """One GGUF model and one context (one sequence, `n_ctx` positions), on `threads` threads for prefill
    and decode alike. By default llama.cpp's defaults: f16 KV cache, flash attention as it decides (on, on a
    CPU). `exact=True`: an f32 KV cache and no flash attention, nothing rounded below the weights' type, to
    check that the model itself is the same."""

    def __init__(self, path: Path, *, n_ctx: int, threads: int, repack: bool, exact: bool = False) -> None:
        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its log callback prints every line
        self._api = llama_cpp
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.use_extra_bufts = repack
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise RuntimeError(f"{path}: llama.cpp could not load it")
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = context_params.n_batch = context_params.n_ubatch = n_ctx
        context_params.n_threads = context_params.n_threads_batch = threads
        if exact:
            context_params.type_k = context_params.type_v = llama_cpp.GGML_TYPE_F32
            context_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = llama_cpp.llama_init_from_model(self._model, context_params)
        if not self._ctx:
            raise RuntimeError(f"{path}: llama.cpp could not create a context of {n_ctx} positions")
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model)))
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.n_past = 0

    def clear(self) -> None:
        """Forget every cached position (the next `decode` starts a new sequence)."""
        self._api.llama_memory_clear(self._api.llama_get_memory(self._ctx), True)
        self.n_past = 0

    def decode(self, tokens: Sequence[int], *, all_logits: bool = False) -> np.ndarray:
        """Append `tokens` to the sequence; logits [rows, vocab] of every token, or of the last one."""
        batch, n = self._batch, len(tokens)
        batch.n_tokens = n
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = self.n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = all_logits or i == n - 1
        status = self._api.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} for {n} tokens at position {self.n_past}")
        self.n_past += n
        rows = range(n) if all_logits else [n - 1]
        return np.stack(
            [np.ctypeslib.as_array(self._api.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,)) for i in rows]
        ).copy()

    def close(self) -> None:
        self._api.llama_batch_free(self._batch)
        self._api.llama_free(self._ctx)
        self._api.llama_model_free(self._model)

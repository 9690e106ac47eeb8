"""Test support: trace one NxDI submodel (context encoding, token generation, ...) of an application to HLO
on XLA:CPU, the way NxD's `ModelBuilder.trace()` does before it hands the HLO to neuronx-cc, and count what
would break a Neuron graph.

`ModelBuilder.trace()` (NxD `trace/model_builder.py:534-597`): mock a `world_size` distributed backend, init
the "xla" process group, `initialize_model_parallel`, AOT mode, NxDI's custom groups, then per submodel
`_generate_hlo`: `load_module()`, `get(bucket_rank)`, and `torch_neuronx.xla_impl.trace.generate_hlo` (closed
source). This file keeps that prologue and replaces only `generate_hlo` by torch_xla itself: module and
example inputs to `torch_xla.device()`, forward, `torch_xla._XLAC._get_xla_tensors_hlo` of the outputs.

Counted over the forward: `aten::_local_scalar_dense` (a host sync: the graph is cut and run mid-forward)
and every other `aten::*` counter (an op torch_xla could not lower and ran on the host). Both must be 0 for
a graph neuronx-cc can compile as one program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch_xla
import torch_xla.debug.metrics as metrics

HOST_SYNC = "aten::_local_scalar_dense"
DTYPE_BYTES = {
    **dict.fromkeys(("pred", "s8", "u8"), 1),
    **dict.fromkeys(("bf16", "f16", "s16", "u16"), 2),
    **dict.fromkeys(("f32", "s32", "u32"), 4),
    **dict.fromkeys(("f64", "s64", "u64"), 8),
}
# `%name = f32[1,2,3]{2,1,0} opcode(` in HLO text; tuples and token types do not match.
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = (\w+)\[([\d,]*)\](?:\{[^}]*\})? ([\w\-]+)\(")


@dataclass(frozen=True)
class Tensor:
    """One HLO instruction's result: dtype, shape, opcode and size in bytes."""

    dtype: str
    shape: tuple[int, ...]
    opcode: str

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * DTYPE_BYTES[self.dtype]

    def __str__(self) -> str:
        return f"{self.opcode} {self.dtype}[{','.join(map(str, self.shape))}] ({self.nbytes / 2**20:.1f} MiB)"


@dataclass(frozen=True)
class GraphTrace:
    """What tracing one submodel's forward produced."""

    tag: str
    hlo: str
    host_syncs: int
    fallbacks: dict[str, int]

    def intermediates(self) -> list[Tensor]:
        """Every computed array in the HLO (parameters, i.e. weights, cache and inputs, excluded)."""
        found = []
        for line in self.hlo.splitlines():
            match = INSTRUCTION.match(line)
            if match and match.group(1) in DTYPE_BYTES and match.group(3) != "parameter":
                shape = tuple(int(size) for size in match.group(2).split(",") if size)
                found.append(Tensor(match.group(1), shape, match.group(3)))
        return found

    def largest_intermediate(self) -> Tensor:
        return max(self.intermediates(), key=lambda tensor: tensor.nbytes)

    def count(self, opcode: str) -> int:
        """Instructions with this opcode (tuple-valued ones, such as a fused all-reduce, included)."""
        return len(re.findall(rf"[\])}}] {re.escape(opcode)}\(", self.hlo))


def _aten_counters() -> dict[str, int]:
    return {name: metrics.counter_value(name) for name in metrics.counter_names() if name.startswith("aten::")}


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in _flat_tensors(item)]
    if isinstance(value, dict):
        return [tensor for item in value.values() for tensor in _flat_tensors(item)]
    return []


@torch.no_grad()
def trace_forward(tag: str, module: torch.nn.Module, inputs: list[torch.Tensor]) -> GraphTrace:
    """Move `module` and `inputs` to the XLA device, run the forward lazily and lower its outputs to HLO,
    counting host syncs and fallbacks over the forward only (the moves are synced before)."""
    device = torch_xla.device()
    module = module.to(device)
    inputs_x = [tensor.to(device) for tensor in inputs]
    torch_xla.sync()
    metrics.clear_all()
    outputs = _flat_tensors(module(*inputs_x))
    host_syncs = metrics.counter_value(HOST_SYNC) or 0
    fallbacks = {name: count for name, count in _aten_counters().items() if name != HOST_SYNC}
    return GraphTrace(tag, torch_xla._XLAC._get_xla_tensors_hlo(outputs), host_syncs, fallbacks)


def _trace_container(tag: str, container: Any, bucket_rank: int) -> GraphTrace:
    """`ModelBuilder._generate_hlo` for one bucket, with `trace_forward` in place of `generate_hlo`."""
    instance = container.model_instance
    instance.load_module()
    bucket_config = container.bucket_config
    func_kwargs = {} if bucket_config is None else bucket_config.get_func_kwargs_for_bucket_rank(bucket_rank)
    func_kwargs.pop("bucket_rank", None)
    module, _aliases = instance.get(bucket_rank, **func_kwargs)
    return trace_forward(tag, module, list(container.example_inputs[bucket_rank]))


def trace_submodel(app: Any, tag: str, bucket_rank: int = 0) -> GraphTrace:
    """HLO of `app`'s submodel `tag` (e.g. "context_encoding_model") at `bucket_rank`, as rank 0 of the app's
    world traces it (`ModelBuilder.trace()`'s prologue and epilogue around `_generate_hlo`)."""
    import torch_neuronx
    from neuronx_distributed.parallel_layers import parallel_state
    from neuronx_distributed.trace.mock_torchdist import mock_distributed

    if not hasattr(torch_neuronx, "__version__"):  # the stand-in: ModelBuilder checks for torch-neuronx 2.x
        torch_neuronx.__version__ = "2.stand-in"
    builder = app.get_builder()
    if tag not in builder.model_collection:
        raise KeyError(f"no submodel {tag!r}; the app builds {sorted(builder.model_collection)}")
    with mock_distributed(world_size=builder.world_size):
        torch.distributed.init_process_group("xla", rank=0, world_size=builder.world_size)
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=builder.tp_degree,
            pipeline_model_parallel_size=builder.pp_degree,
            expert_model_parallel_size=builder.ep_degree,
            skip_collective_init=True,
            lnc_size=builder.logical_nc_config,
        )
        parallel_state.set_aot_mode(True)
        try:
            if builder.init_custom_process_group_fn:
                builder.init_custom_process_group_fn()
            return _trace_container(tag, builder.model_collection[tag], bucket_rank)
        finally:
            parallel_state.set_aot_mode(False)
            parallel_state.destroy_model_parallel()
            torch.distributed.destroy_process_group()

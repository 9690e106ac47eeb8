"""`streamed_causal_lm`: `DeepseekForCausalLM` whose weights stay in the checkpoint until a layer runs.

The model object is the ordinary one (its `forward`, `DeepseekModel.forward`, generation, teacher
forcing); four of its parts are swapped for stand-ins that fetch the real modules when called:

- `model.embed_tokens` -> `StreamedEmbedding`: reads only the rows of the ids in the call.
- `model.layers` -> `StreamedLayers`: `layers[i]` is a real `DecoderLayer` (built by causal_lm's own
  `build_attention` / `build_mlp`, on the meta device, then allocated and filled by `fill_model` from
  the checkpoint), kept in the `WeightCache`.
- in MoE layers, `mlp.experts` -> `StreamedExperts`: after the router (the layer's real one) chose,
  it loads only the chosen experts, stacks them in ascending id order and calls dsv3-moe's
  `grouped_swiglu` with the ids renumbered 0..A-1. The renumbering is monotone, so the stable sort,
  the runs of rows, the per-expert products and the accumulation order are exactly those of the
  in-memory `GroupedExperts` over all experts: the output is bit-identical.
- `lm_head` -> `StreamedHead`: the real `nn.Linear` (as `DeepseekForCausalLM.lm_head`), from the cache.

Memory: the cache holds at most `capacity` bytes of layers, the head and experts (experts only in
free room: `WeightCache.offer`); the chosen experts of one MoE call are dequantized straight
into one reused buffer of at most `expert_stack_bytes` (`ExpertStack`). When they do not fit it, they
run in consecutive groups and the group outputs are summed: another summation order (and a group's
first expert also runs, at weight zero, the rows routed to the other groups, which can change how its
matrix product is blocked), so equal up to fp32 rounding instead of bit for bit (docs/golden.md).

Shape legend: B batch, S tokens, D hidden, T tokens flattened, K experts per token, A active experts,
X 2 x expert intermediate, I expert intermediate, U distinct ids, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dsv3_blocks import RMSNorm
from dsv3_config import LayerKind, ModelConfig
from dsv3_model.causal_lm import DeepseekForCausalLM, build_attention, build_mlp
from dsv3_model.decoder_layer import DecoderLayer
from dsv3_model.golden.progress import NoProgress, RunProgress
from dsv3_model.golden.source import CountingSource
from dsv3_model.golden.weight_cache import WeightCache
from dsv3_model.state_dict_map import StackedSource, checkpoint_sources, fill_model
from dsv3_moe import DeepseekMoE, grouped_swiglu
from dsv3_weights.errors import CheckpointError

EMBED = "model.embed_tokens.weight"


class StreamedWeights:
    """What the stand-ins share: the counting source, the cache, the model dtype and the progress."""

    def __init__(
        self,
        source: CountingSource,
        dtype: torch.dtype,
        cache: WeightCache,
        expert_stack_bytes: int,
        progress: RunProgress | None = None,
    ) -> None:
        self.source = source
        self.cfg: ModelConfig = source.cfg
        self.dtype = dtype
        self.cache = cache
        self.expert_stack_bytes = expert_stack_bytes
        self.progress = progress or NoProgress()
        self._sizes: dict[str, int] = {}
        self._names = source.reader.keys()
        self.stack = ExpertStack(self.cfg, dtype, self.stack_slots())
        self.head_prefix = (
            "lm_head." if "lm_head.weight" in source or not self.cfg.tie_word_embeddings else ("model.embed_tokens.")
        )

    # ---- modules -------------------------------------------------------------------------------

    def module(self, key: str, prefix: str, build: Callable[[], nn.Module]) -> nn.Module:
        """The real module `build()` makes, filled from the checkpoint tensors under `prefix`, cached."""
        cached = self.cache.lookup(key)
        if cached is not None:
            assert isinstance(cached, nn.Module)
            return cached

        with torch.device("meta"):
            skeleton = build().to(self.dtype)
        nbytes = self._sizes.setdefault(key, _state_bytes(skeleton))

        def load() -> nn.Module:
            module = skeleton.to_empty(device="cpu").eval()
            available = {name[len(prefix) :] for name in self._names if name.startswith(prefix)}
            fill_model(module, self.cfg, lambda name: self.source.get(prefix + name), available)
            return module

        return self.cache.get(key, nbytes, load)

    def layer_skeleton(self, index: int) -> nn.Module:
        """Decoder layer `index` as `DeepseekModel` builds it, with `StreamedExperts` in MoE layers."""
        layer = DecoderLayer(self.cfg, self_attn=build_attention(self.cfg), mlp=build_mlp(self.cfg, index))
        if isinstance(layer.mlp, DeepseekMoE):
            layer.mlp.experts = StreamedExperts(self, index)
        return layer

    def layer(self, index: int) -> nn.Module:
        self.progress.layer(index)
        return self.module(f"layer {index}", f"model.layers.{index}.", lambda: self.layer_skeleton(index))

    def head(self) -> nn.Module:
        cfg = self.cfg
        return self.module("lm_head", self.head_prefix, lambda: nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False))

    def norm(self) -> nn.Module:
        """The final norm (hidden_size values): loaded once, outside the cache."""
        with torch.device("meta"):
            norm = RMSNorm(self.cfg.hidden_size, self.cfg.rms_norm_eps).to(self.dtype)
        norm = norm.to_empty(device="cpu").eval()
        fill_model(norm, self.cfg, lambda name: self.source.get(f"model.norm.{name}"), {"weight"})
        return norm

    # ---- experts -------------------------------------------------------------------------------

    def expert_sources(self, layer: int) -> tuple[StackedSource, StackedSource]:
        prefix = f"model.layers.{layer}.mlp.experts."
        sources = checkpoint_sources(self.cfg, [prefix + "gate_up_proj", prefix + "down_proj"], set())
        gate_up, down = sources[prefix + "gate_up_proj"], sources[prefix + "down_proj"]
        assert isinstance(gate_up, StackedSource)
        assert isinstance(down, StackedSource)
        return gate_up, down

    def expert_bytes(self) -> int:
        return 3 * self.cfg.moe_intermediate_size * self.cfg.hidden_size * self.dtype.itemsize

    def release(self) -> None:
        """Free the cached weights and the stack buffer (the stand-in modules and this object reference
        each other, so without this they would wait for the garbage collector)."""
        self.cache.clear()
        self.stack.release()

    def stack_slots(self) -> int:
        """How many experts the stack buffer holds (at least one, at most every routed expert)."""
        return min(self.cfg.n_routed_experts, max(1, self.expert_stack_bytes // max(1, self.expert_bytes())))

    def expert_stack(self, layer: int, experts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacks `[C, X, H]`, `[C, H, I]` of the given experts in the reused buffer (views of its first C
        slots, valid until the next call), each expert dequantized straight into its slot."""
        gate_up_CXH, down_CHI = self.stack.slots(len(experts))
        for slot, expert in enumerate(experts):
            self.fill_slot(layer, expert, gate_up_CXH[slot], down_CHI[slot])
        return gate_up_CXH, down_CHI

    def fill_slot(self, layer: int, expert: int, gate_up_XH: torch.Tensor, down_HI: torch.Tensor) -> None:
        """Expert `expert` of `layer` into the slot: from the cache, or read and dequantized tensor by tensor
        into the slot's rows (no per-expert copy, no concatenation), then offered to the cache."""
        key = f"layer {layer} expert {expert}"
        cached = self.cache.lookup(key)
        if cached is not None:
            gate_up_XH.copy_(cached[0])
            down_HI.copy_(cached[1])
            return
        for stacked, slot in zip(self.expert_sources(layer), (gate_up_XH, down_HI), strict=True):
            parts = slot.chunk(len(stacked.templates), dim=stacked.concat_dim)
            for template, part in zip(stacked.templates, parts, strict=True):
                part.copy_(self.source.get(template.format(e=expert)))
        self.cache.count_load()
        self.cache.offer(key, self.expert_bytes(), lambda: (gate_up_XH.clone(), down_HI.clone()))

    # ---- checks --------------------------------------------------------------------------------

    def check(self) -> None:
        """Every tensor the run will read exists with the model's shape, before any compute starts."""
        reader, cfg = self.source.reader, self.cfg
        problems: list[str] = []

        def expect(name: str, shape: tuple[int, ...]) -> None:
            if name not in reader:
                problems.append(f"{name} is missing")
            elif tuple(reader.shape(name)) != shape:
                problems.append(f"{name} has shape {tuple(reader.shape(name))}, the model needs {shape}")

        expect(EMBED, (cfg.vocab_size, cfg.hidden_size))
        expect("model.norm.weight", (cfg.hidden_size,))
        expect(self.head_prefix + "weight", (cfg.vocab_size, cfg.hidden_size))
        for index in range(cfg.num_hidden_layers):
            with torch.device("meta"):
                skeleton = self.layer_skeleton(index)
            for key, tensor in skeleton.state_dict().items():
                expect(f"model.layers.{index}.{key}", tuple(tensor.shape))
            if cfg.layer_kind(index) is not LayerKind.DENSE:
                gate_up, down = self.expert_sources(index)
                inter, hidden = cfg.moe_intermediate_size, cfg.hidden_size
                for e in range(cfg.n_routed_experts):
                    for template in gate_up.templates:
                        expect(template.format(e=e), (inter, hidden))
                    for template in down.templates:
                        expect(template.format(e=e), (hidden, inter))
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise CheckpointError(f"{reader.directory}: {problems[0]}{more}")


class ExpertStack:
    """The buffer the chosen experts of one MoE call are stacked into: allocated once, grown (never past
    `max_slots`) only when a call chooses more experts than it holds, and reused by every call, so no
    second stack is ever alive while the next one fills and the allocator sees no churn of large blocks."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, max_slots: int) -> None:
        self.shape_XH = (2 * cfg.moe_intermediate_size, cfg.hidden_size)
        self.shape_HI = (cfg.hidden_size, cfg.moe_intermediate_size)
        self.dtype = dtype
        self.max_slots = max_slots
        self.release()

    def release(self) -> None:
        """Back to an empty buffer."""
        self.gate_up_CXH = torch.empty(0, *self.shape_XH, dtype=self.dtype)
        self.down_CHI = torch.empty(0, *self.shape_HI, dtype=self.dtype)

    def slots(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `count` slots (contiguous, aligned views), growing the buffer first if needed."""
        if count > self.max_slots:
            raise ValueError(f"{count} experts do not fit a stack of {self.max_slots}")
        if count > self.gate_up_CXH.shape[0]:
            self.release()  # free the old buffer before allocating the new one
            self.gate_up_CXH = torch.empty(count, *self.shape_XH, dtype=self.dtype)
            self.down_CHI = torch.empty(count, *self.shape_HI, dtype=self.dtype)
        return self.gate_up_CXH[:count], self.down_CHI[:count]


def _state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


class StreamedExperts(nn.Module):
    """`experts(hidden_TH, topk_idx_TK, topk_weight_TK) -> out_TH`, reading only the chosen experts."""

    def __init__(self, weights: StreamedWeights, layer: int) -> None:
        super().__init__()
        self.weights = weights
        self.layer = layer

    def forward(self, hidden_TH: torch.Tensor, topk_idx_TK: torch.Tensor, topk_weight_TK: torch.Tensor) -> torch.Tensor:
        active_A = torch.unique(topk_idx_TK)  # ascending
        local_TK = torch.searchsorted(active_A, topk_idx_TK)  # monotone renumbering 0..A-1
        experts = active_A.tolist()
        group = self.weights.stack_slots()
        out_TH: torch.Tensor | None = None
        for first in range(0, len(experts), group):
            gate_up_CXH, down_CHI = self.weights.expert_stack(self.layer, experts[first : first + group])
            part_TH = grouped_swiglu(hidden_TH, local_TK, topk_weight_TK, gate_up_CXH, down_CHI, first_expert=first)
            out_TH = part_TH if out_TH is None else out_TH + part_TH
        assert out_TH is not None  # the router always chooses at least one expert
        return out_TH

    def extra_repr(self) -> str:
        return f"layer {self.layer}, streamed from the checkpoint"


class StreamedLayers(nn.Module):
    """`layers[i]`: decoder layer i, materialized from the cache (no submodules registered here)."""

    def __init__(self, weights: StreamedWeights) -> None:
        super().__init__()
        self.weights = weights

    def __getitem__(self, index: int) -> nn.Module:
        return self.weights.layer(index)

    def __len__(self) -> int:
        return self.weights.cfg.num_hidden_layers


class StreamedEmbedding(nn.Module):
    """`embed_tokens(ids_BS) -> [B, S, D]`: the rows of the ids present, read from the checkpoint."""

    def __init__(self, weights: StreamedWeights) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, ids_BS: torch.Tensor) -> torch.Tensor:
        unique_U, inverse_BS = torch.unique(ids_BS, return_inverse=True)
        rows_UD = self.weights.source.rows(EMBED, unique_U.tolist()).to(self.weights.dtype)
        return rows_UD[inverse_BS]


class StreamedHead(nn.Module):
    """`lm_head(hidden) -> logits`, the cached `nn.Linear`; one call ends one model step."""

    def __init__(self, weights: StreamedWeights) -> None:
        super().__init__()
        self.weights = weights

    @property
    def weight(self) -> torch.Tensor:
        """The head's weight, from the cache (generation reads `lm_head.weight.device`)."""
        head = self.weights.head()
        assert isinstance(head, nn.Linear)
        return head.weight

    def forward(self, hidden_BSD: torch.Tensor) -> torch.Tensor:
        logits = self.weights.head()(hidden_BSD)
        self.weights.progress.step_done()
        return logits


def streamed_causal_lm(weights: StreamedWeights) -> DeepseekForCausalLM:
    """The causal LM over `weights` (checked first); no layer weight is read until it runs."""
    weights.check()
    with torch.device("meta"):
        model = DeepseekForCausalLM(weights.cfg)
    model.model.add_module("embed_tokens", StreamedEmbedding(weights))  # add_module replaces the child
    model.model.add_module("layers", StreamedLayers(weights))
    model.model.add_module("norm", weights.norm())
    model.add_module("lm_head", StreamedHead(weights))
    return model.eval()

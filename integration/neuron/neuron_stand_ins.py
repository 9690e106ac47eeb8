"""Test support only: import-only stand-ins for the compiled Neuron modules, so NxD and NxDI import on
a machine without the Neuron SDK and run in their CPU mode (docs/nxdi-cpu.md).

NxD and NxDI import `torch_xla`, `torch_neuronx`, `libneuronxla`, `neuronxcc`, `nki` and `nkilib` at
module top level even in CPU mode, and NxD evaluates `torch.classes.neuron.SPMDModel` /
`LayoutTransformation` in annotations. NxDI's model table (`utils/constants.py`, which vLLM's Neuron
plugin and `register()` edit) imports every NxDI model, and its Mllama image transforms import
`torchvision` at module top level (`models/mllama/image_transform.py:14-17`); the Neuron SDK ships a
torchvision built for its torch, PyPI's does not load next to the CPU torch wheel used here, and no
text model calls it, so it gets the same import-only stand-in (PIL, also imported there, is a plain PyPI
package: the session installs pillow). On the CPU path (`NXD_CPU_MODE=1`, `NeuronConfig(on_cpu=True)`,
`to_cpu()`) only two of their symbols are called, so only those carry values:

- `torch_neuronx.utils.get_platform_target` (and `torch_neuronx.utils.utils.get_platform_target`):
  returns "trn1";
- `torch_neuronx.xla_impl.base.xla_hlo_call` (and `torch_neuronx.xla_impl.ops.xla_hlo_call`): turns
  the decorated function into the identity on its arguments (NxDI's layer-boundary markers use it).

Every other name resolves to an opaque `StandIn` class: usable as a decorator (returns the function),
base class, annotation or attribute chain, and nothing else. `install()` covers a root module only when
it is *not* importable, so on a Neuron host the real modules are used and nothing is faked. Keep NKI and
kernel flags off in CPU configs: the stand-ins make `try: import <kernel>` guards succeed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch

STAND_IN_ROOTS = ("torch_xla", "torch_neuronx", "libneuronxla", "neuronxcc", "nki", "nkilib", "torchvision")
TORCH_CLASSES = ("SPMDModel", "LayoutTransformation")


def platform_target() -> str:
    """`torch_neuronx.utils.get_platform_target` stand-in: NxD's default platform."""
    return "trn1"


def identity_hlo_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`xla_hlo_call` stand-in: the decorated HLO builder becomes the identity on its arguments.

    NxDI's layer-boundary markers (`models/layer_boundary_marker.py`) wrap a custom call that returns
    its inputs unchanged on device; on CPU the marker must pass the tensors through the same way.
    """

    def passthrough(*args: Any) -> Any:
        return args[0] if len(args) == 1 else args

    passthrough.__name__ = getattr(fn, "__name__", "hlo_call")
    return passthrough


VALUED_SYMBOLS: dict[str, dict[str, Callable[..., Any]]] = {
    "torch_neuronx.utils": {"get_platform_target": platform_target},
    "torch_neuronx.utils.utils": {"get_platform_target": platform_target},
    "torch_neuronx.xla_impl.base": {"xla_hlo_call": identity_hlo_call},
    "torch_neuronx.xla_impl.ops": {"xla_hlo_call": identity_hlo_call},
}


class _StandInMeta(type):
    """Metaclass of stand-in classes: attribute chains, subscripts and decorator calls resolve to stand-ins."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") or "_stand_in_path" not in cls.__dict__:
            raise AttributeError(name)
        return make_stand_in(f"{cls.__dict__['_stand_in_path']}.{name}")

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if "_stand_in_path" not in cls.__dict__:  # a real subclass of a stand-in: construct normally
            return super().__call__(*args, **kwargs)
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return cls


class StandIn(metaclass=_StandInMeta):
    """Base of every fabricated name; `isinstance(x, StandIn)` is never true of real data."""


def make_stand_in(path: str) -> type:
    return _StandInMeta(path.rsplit(".", 1)[-1], (StandIn,), {"_stand_in_path": path, "__module__": path})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"stand-in module {self.__name__} has no {name}")
        value = make_stand_in(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StandInModule(spec.name, "dsv3 test stand-in (not the Neuron SDK)")
        module.__path__ = []  # a package, so every submodule import comes back here
        for name, value in VALUED_SYMBOLS.get(spec.name, {}).items():
            setattr(module, name, value)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class StandInFinder(importlib.abc.MetaPathFinder):
    """Answers imports under `roots` (appended last on `sys.meta_path`, after every real finder)."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(roots)
        self._loader = _StandInLoader()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] not in self.roots:
            return None
        return importlib.machinery.ModuleSpec(fullname, self._loader, is_package=True)


def _torch_class_missing(name: str) -> bool:
    try:
        getattr(torch.classes.neuron, name)
    except RuntimeError:
        return True
    return False


def install() -> tuple[str, ...]:
    """Install stand-ins for the Neuron modules that are not importable; returns what was stood in.

    Idempotent. On a Neuron host (all importable) it changes nothing and returns ().
    """
    if any(isinstance(finder, StandInFinder) for finder in sys.meta_path):
        return next(f.roots for f in sys.meta_path if isinstance(f, StandInFinder))
    missing = tuple(root for root in STAND_IN_ROOTS if importlib.util.find_spec(root) is None)
    if missing:
        sys.meta_path.append(StandInFinder(missing))
    missing_classes = [name for name in TORCH_CLASSES if _torch_class_missing(name)]
    if missing_classes:
        namespace = types.SimpleNamespace(
            **{name: make_stand_in(f"torch.classes.neuron.{name}") for name in TORCH_CLASSES}
        )
        # torch.classes resolves namespaces lazily through __getattr__; a real attribute takes precedence.
        torch.classes.neuron = namespace  # type: ignore[attr-defined]
    return missing + tuple(f"torch.classes.neuron.{name}" for name in missing_classes)

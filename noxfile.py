"""Developer and CI sessions. Every session builds its environments with uv (about 1 s warm, see
docs/environment.md: nox's default pip backend costs ~16 min for the six package suites).

- `unit-<pkg>`: each package's CPU suite in its own venv holding only that package, its declared
  in-repo dependencies and test tools, so an undeclared import fails (`config` and `plan`: no torch).
- `integration`: the reuse test (a different model built from dsv3-mla and dsv3-moe alone).
- `lint`: ruff, import-linter contracts, mypy.
- `demo`: the README's main job on the embedded tiny preset.
- `bench`: benchmarks side by side with transformers 4.57 and the latest 5.x, as ratios.
- `compat`: the published-config and transformers-saved parity suites under transformers 5.x.
- `neuron_cpu` / `neuron_integration`: the NxDI adapter suites (integration/neuron/README.md).
- `golden_torch29` (opt-in): a `dsv3 golden` file loads under torch 2.9 as NxDI reads it (docs/golden.md).
- `xla_trace`: the plain model traced through torch_xla on a CPU (integration/xla), not a default session.
- `neuron_trace`: the NxDI adapter's graphs traced to HLO through torch_xla on a CPU (integration/neuron_trace,
  docs/neuron-trace.md), not a default session.

Torch is pinned as `torch==2.13.0` in `constraints/ci.txt` (`UV_CONSTRAINT`), any build: on a machine
whose pip is configured with a local wheel folder (a CPU build, `2.13.0+cpu`), uv, which does not read
pip's configuration, is given that folder (`UV_FIND_LINKS`) and takes the local wheel; everywhere else
it downloads PyPI's `torch==2.13.0` (the default build, which runs on a CPU as it is). A `+cpu` pin
would make the second case fail, since PyPI carries no `+cpu` build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints" / "ci.txt"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["unit", "integration", "lint"]
nox.options.reuse_existing_virtualenvs = True

# Benchmarks whose competitor is transformers: they also run under the latest 5.x.
COMPARED_WITH_TRANSFORMERS = ("bench_mla", "bench_moe", "bench_model")

# llama.cpp, the CPU engine people use for this model family, as PyPI's llama-cpp-python ships it (sdist only:
# uv compiles it, about 10 min on 2 cores, once per CPU; see benchmarks/README.md).
LLAMA_CPP_PYTHON = "0.3.36"
# CPU only, -march=native, the library alone (no multimodal mtmd, tests, tools or examples: build time).
LLAMA_CPP_DEFINES = {
    "GGML_NATIVE": "ON",
    "GGML_CUDA": "OFF",
    "GGML_VULKAN": "OFF",
    "GGML_METAL": "OFF",
    "GGML_BLAS": "OFF",
    "LLAVA_BUILD": "OFF",
}

# Each package, its in-repo dependencies (as declared in its pyproject), and what its tests need.
# `config` and `plan` run without torch (asserted in `unit`).
PACKAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "config": ((), ("pytest", "hypothesis")),
    "blocks": ((), ("pytest", "transformers")),
    "rope": (("config",), ("pytest", "hypothesis", "transformers", "testing")),
    "mla": (("config", "rope", "blocks"), ("pytest", "hypothesis", "transformers", "testing")),
    "moe": (("config", "blocks"), ("pytest", "hypothesis", "transformers", "testing")),
    "weights": (("config",), ("pytest", "hypothesis", "safetensors", "transformers", "testing")),
    "plan": (("config",), ("pytest", "hypothesis")),
    "model": (
        ("config", "blocks", "rope", "mla", "moe", "weights", "plan"),
        ("pytest", "hypothesis", "safetensors", "transformers", "testing"),
    ),
}
TORCH_FREE = ("config", "plan")


def _uv_env() -> dict[str, str]:
    env = {"UV_CONSTRAINT": str(CONSTRAINTS), "UV_PYTHON_DOWNLOADS": "never"}
    find_links = os.environ.get("UV_FIND_LINKS") or _pip_find_links()
    if find_links:
        env["UV_FIND_LINKS"] = find_links
    return env


def _pip_find_links() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def _install(session: nox.Session, *requirements: str) -> None:
    local = [
        str(ROOT / "packages" / f"dsv3-{name}")
        for name in requirements
        if (ROOT / "packages" / f"dsv3-{name}").is_dir()
    ]
    remote = [req for req in requirements if not (ROOT / "packages" / f"dsv3-{req}").is_dir()]
    session.install(*local, *remote, env=_uv_env())


def _pytest(session: nox.Session, *paths: str) -> None:
    """Run pytest; a package without tests yet is reported, not failed (pytest exits 5)."""
    session.run(
        "python", "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider", *session.posargs, success_codes=[0, 5]
    )


@nox.session(python="3.11")
@nox.parametrize("package", list(PACKAGES))
def unit(session: nox.Session, package: str) -> None:
    in_repo, test_requirements = PACKAGES[package]
    _install(session, package, *in_repo, *test_requirements)
    if package in TORCH_FREE:
        session.run(
            "python", "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
        )
    _pytest(session, f"packages/dsv3-{package}/tests")


@nox.session(python="3.11")
def integration(session: nox.Session) -> None:
    """A different model built from dsv3-mla and dsv3-moe alone: dsv3-model is not installed."""
    _install(session, "config", "blocks", "rope", "mla", "moe", "testing", "transformers", "pytest")
    _pytest(session, "integration/reuse")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    _install(session, *PACKAGES, "testing", "ruff", "import-linter", "mypy", "transformers", "pytest", "hypothesis")
    session.run("ruff", "check", "packages", "integration", "benchmarks", "noxfile.py")
    session.run("lint-imports")
    session.run("mypy", *[f"packages/dsv3-{name}/src" for name in PACKAGES])


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Synthetic FP8 tiny checkpoint -> BF16 conversion -> generation -> verification against HF."""
    _install(session, *PACKAGES, "transformers")
    work = Path(session.create_tmp()) / "demo"
    shutil.rmtree(work, ignore_errors=True)  # each demo starts from nothing
    session.run("dsv3", "demo", "--workdir", str(work), *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("transformers", ["4.57", "latest"])
def bench(session: nox.Session, transformers: str) -> None:
    """Benchmarks under one transformers version; `report.py` prints both versions side by side."""
    spec = "transformers==4.57.6" if transformers == "4.57" else "transformers>=5"
    env = _uv_env()
    if transformers == "latest":
        env["UV_CONSTRAINT"] = str(ROOT / "constraints" / "bench-latest.txt")
    local = [str(ROOT / "packages" / f"dsv3-{name}") for name in PACKAGES]
    session.install(*local, str(ROOT / "packages" / "dsv3-testing"), spec, "psutil", env=env)
    if transformers == "4.57":
        _install_llamacpp(session, env)
    out = ROOT / ".bench" / f"transformers-{transformers}"
    out.mkdir(parents=True, exist_ok=True)
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        if transformers == "latest" and script.stem not in COMPARED_WITH_TRANSFORMERS:
            continue
        session.run("python", str(script), "--out", str(out / f"{script.stem}.json"), *session.posargs)
    session.run("python", str(ROOT / "benchmarks" / "report.py"), str(ROOT / ".bench"))


def _install_llamacpp(session: nox.Session, env: dict[str, str]) -> None:
    """llama-cpp-python built from PyPI's sdist, and that very sdist unpacked under `.bench/llama-cpp-python/`
    for its `convert_hf_to_gguf.py` and `gguf-py` (same llama.cpp commit as the library).

    The build is `-march=native`: the CPU's flags go into a config setting (`cmake.define.DSV3_CPU_FLAGS`, a
    digest llama.cpp ignores), which uv's built-wheel cache keys on, so a machine whose CPU changed between
    sessions compiles anew instead of reusing a wheel built for other instructions."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    flags = next((line for line in lines if line.startswith("flags")), "")
    settings = {**LLAMA_CPP_DEFINES, "DSV3_CPU_FLAGS": hashlib.sha256(flags.encode()).hexdigest()[:16]}
    config = [arg for key, value in settings.items() for arg in ("-C", f"cmake.define.{key}={value}")]
    session.install(*config, f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "numpy", "pyyaml", "tqdm", env=env)
    sdist_dir = ROOT / ".bench" / "llama-cpp-python"
    unpacked = sdist_dir / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    if not (unpacked / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").exists():
        archive = sdist_dir / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not archive.exists():
            session.run_install(
                sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(sdist_dir), external=True,
            )
        partial = sdist_dir / "unpacking"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.unpack_archive(archive, partial, filter="data")
        (partial / unpacked.name).rename(unpacked)  # complete, or absent
        shutil.rmtree(partial)


@nox.session(python="3.11")
def compat(session: nox.Session) -> None:
    """The published-config and transformers-saved parity suites under the latest transformers 5.x (pinned in
    `constraints/bench-latest.txt`, the same torch): dsv3 matches 4.57 in `unit`, and 5.x here."""
    env = _uv_env()
    env["UV_CONSTRAINT"] = str(ROOT / "constraints" / "bench-latest.txt")
    local = [str(ROOT / "packages" / f"dsv3-{name}") for name in (*PACKAGES, "testing")]
    session.install(*local, "transformers>=5", "pytest", env=env)
    tests = ROOT / "packages" / "dsv3-model" / "tests"
    _pytest(session, str(tests / "test_model_published_configs.py"), str(tests / "test_model_hf_saved.py"))


@nox.session(python="3.11")
def xla_trace(session: nox.Session) -> None:
    """torch 2.9 + torch_xla 2.9 from PyPI (the Neuron SDK 2.28 pin; `constraints/xla.txt`) in its own venv:
    about 3 min and 7 GB cold (PyPI's torch 2.9 is the CUDA build), then the dsv3 packages without
    dependencies; the test skips with its reason where torch_xla cannot be imported."""
    env = {"UV_CONSTRAINT": str(ROOT / "constraints" / "xla.txt"), "UV_PYTHON_DOWNLOADS": "never"}
    session.install("torch", "torch-xla", env=env)
    local = [str(ROOT / "packages" / f"dsv3-{name}") for name in (*PACKAGES, "testing")]
    session.install("--no-deps", *local, env=env)
    session.install("pydantic", "safetensors", "tqdm", "psutil", "pytest", env=env)
    session.run(
        "python", "-m", "pytest", "integration/xla", "-q", "-p", "no:cacheprovider", *session.posargs,
        env={"PJRT_DEVICE": "CPU"},
    )


@nox.session(python="3.11")
def neuron_trace(session: nox.Session) -> None:
    """The NxDI adapter's graphs traced to HLO on XLA:CPU (docs/neuron-trace.md): the `xla_trace` venv (torch
    2.9 + torch_xla 2.9) plus what NxD/NxDI import; sources from DSV3_NXD_SRC / DSV3_NXDI_SRC as in
    `neuron_cpu`. Skips with its reason where NxDI or torch_xla is not importable."""
    env = {"UV_CONSTRAINT": str(ROOT / "constraints" / "xla.txt"), "UV_PYTHON_DOWNLOADS": "never"}
    session.install("torch", "torch-xla", env=env)
    local = [str(ROOT / "packages" / f"dsv3-{name}") for name in (*PACKAGES, "testing")]
    session.install("--no-deps", *local, env=env)
    session.install(
        "pydantic", "safetensors", "tqdm", "psutil", "pytest", "transformers==4.57.6", "tenacity", "boto3",
        "sentencepiece", env=env,
    )
    session.run(
        "python", "-m", "pytest", "integration/neuron_trace", "-q", "-p", "no:cacheprovider", *session.posargs,
        env={"PJRT_DEVICE": "CPU"},
    )


@nox.session(python="3.11")
def neuron_cpu(session: nox.Session) -> None:
    """The NxDI adapter in NxD/NxDI CPU mode; skips with one reason where NxDI is not importable."""
    # pillow: NxDI's model table (`utils/constants.py`, what vLLM's plugin and `register()` edit) imports its
    # image models, which import PIL; torchvision, imported there too, gets a stand-in (neuron_stand_ins.py).
    _install(session, *PACKAGES, "testing", "transformers", "pytest", "tenacity", "boto3", "sentencepiece", "pillow")
    _pytest(session, "integration/neuron", "-m", "not neuron_device")


@nox.session(python="3.11")
def golden_torch29(session: nox.Session) -> None:
    """Write a golden file with this repo's torch, then `torch.load` it (weights_only, the default) and
    `torch.stack(obj.scores)` under torch 2.9.1, the Neuron SDK's pin, as NxDI's inference_demo.py does.
    torch 2.9 on PyPI is the CUDA build: its venv pulls the nvidia libraries (31 s, 6.6 GB with uv)."""
    _install(session, *PACKAGES)
    work = Path(session.create_tmp())
    ckpt, golden, venv = work / "ckpt", work / "golden.pt", work / "torch29"
    shutil.rmtree(ckpt, ignore_errors=True)
    session.run("dsv3", "make-checkpoint", str(ckpt), "--preset", "tiny", "--fp8", "--no-progress")
    session.run(
        "dsv3",
        "golden",
        "--model",
        str(ckpt),
        "--prompt-ids",
        "1,2,3,4;5,6,7,8",
        "--max-new-tokens",
        "8",
        "--out",
        str(golden),
        "--no-progress",
    )
    if not (venv / "bin" / "python").exists():
        session.run("uv", "venv", "-q", "-p", "3.11", str(venv), external=True)
    session.run("uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "torch==2.9.1", external=True)
    check = (
        "import sys, torch; assert torch.__version__.startswith('2.9'), torch.__version__; "
        "obj = torch.load(sys.argv[1]); logits = torch.stack(obj.scores); "
        "assert tuple(logits.shape) == (8, 2, 256), logits.shape; "
        "assert logits.argmax(dim=2).T.tolist() == obj.sequences[:, 4:].tolist(); "
        "print('torch', torch.__version__, 'torch.stack(obj.scores):', tuple(logits.shape))"
    )
    session.run(str(venv / "bin" / "python"), "-c", check, str(golden), external=True)


@nox.session(python=False)
def neuron_integration(session: nox.Session) -> None:
    """On a Neuron host, in its preinstalled Neuron venv: compile and run (see integration/neuron)."""
    session.run("python", "-m", "pip", "install", "--no-deps", *[f"packages/dsv3-{name}" for name in PACKAGES])
    session.run("python", "-m", "pytest", "integration/neuron", "-m", "neuron_device", "-q", *session.posargs)

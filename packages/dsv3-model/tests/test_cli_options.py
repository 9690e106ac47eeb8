"""Every bad option of every `dsv3` command, each in its own process.

Each case must exit 2 (a bad option) or 1 (bad data) with exactly one line on stderr after the command's
usage block (argparse's own errors and `UsageError` both print the usage first), naming the option, and
no traceback. The table runs in one interpreter with a forked child per case (`cli_forks.py`: real exit
status and stderr, one start-up); a few cases also run through the installed console script and must
give the very same result. Every case runs with a `torch` on the path whose import fails, so each is
refused before torch is imported (and so before any weight is read); the model directories hold only a
`config.json`. `--debug` and `DSV3_DEBUG=1` show the traceback with the same line and exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsv3_config import preset, save_config
from dsv3_model.cli import options

TRIPWIRE = "raise ImportError('dsv3 imported torch before refusing a bad option')\n"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    status: int  # 2 usage, 1 data
    names: str  # text the one error line must contain (the option, file or field)


def _c(line: str, status: int, names: str) -> Case:
    return Case(tuple(line.split()), status, names)


# {tiny}: config.json of the tiny preset (vocab 256, max_position_embeddings 1024, FP8), {bf16}: the same
# without quantization_config, {v3}: DeepSeek-V3's (671 B parameters), {empty}: an empty directory,
# {file}: a plain file; nothing holds weights.
CASES: dict[str, Case] = {
    "generate max-new-tokens 0": _c("generate --max-new-tokens 0", 2, "--max-new-tokens"),
    "generate max-new-tokens -3": _c("generate --max-new-tokens -3", 2, "--max-new-tokens"),
    "generate max-new-tokens 1.5": _c("generate --max-new-tokens 1.5", 2, "--max-new-tokens"),
    "generate max-new-tokens huge": _c("generate --max-new-tokens " + "9" * 5000, 2, "--max-new-tokens"),
    "generate temperature -1": _c("generate --temperature -1", 2, "--temperature"),
    "generate temperature nan": _c("generate --temperature nan", 2, "--temperature"),
    "generate temperature inf": _c("generate --temperature inf", 2, "--temperature"),
    "generate temperature -inf": _c("generate --temperature=-inf", 2, "--temperature"),
    "generate temperature 1e-40": _c("generate --temperature 1e-40", 2, "--temperature"),
    "generate temperature word": _c("generate --temperature hot", 2, "--temperature"),
    "generate top-p 0": _c("generate --top-p 0", 2, "--top-p"),
    "generate top-p 1.5": _c("generate --top-p 1.5", 2, "--top-p"),
    "generate top-p -0.5": _c("generate --top-p -0.5", 2, "--top-p"),
    "generate top-p nan": _c("generate --top-p nan", 2, "--top-p"),
    "generate top-p inf": _c("generate --top-p inf", 2, "--top-p"),
    "generate top-k -1": _c("generate --top-k -1", 2, "--top-k"),
    "generate top-k nan": _c("generate --top-k nan", 2, "--top-k"),
    "generate seed -1": _c("generate --seed -1", 2, "--seed"),
    "generate seed 2**64": _c(f"generate --seed {2**64}", 2, "--seed"),
    "generate seed nan": _c("generate --seed nan", 2, "--seed"),
    "generate prompt-ids empty": _c("generate --prompt-ids=", 2, "--prompt-ids"),
    "generate prompt-ids 1,,2": _c("generate --prompt-ids 1,,2", 2, "--prompt-ids"),
    "generate prompt-ids trailing comma": _c("generate --prompt-ids 1,2,", 2, "--prompt-ids"),
    "generate prompt-ids empty batch row": _c("generate --prompt-ids 1,2;", 2, "--prompt-ids"),
    "generate prompt-ids word": _c("generate --prompt-ids 1,two", 2, "--prompt-ids"),
    "generate prompt-ids negative": _c("generate --prompt-ids 1,-2", 2, "--prompt-ids"),
    "generate prompt-ids float": _c("generate --prompt-ids 1.5", 2, "--prompt-ids"),
    "generate prompt-ids past vocab": _c("generate --prompt-ids 1,256", 2, "--prompt-ids"),
    "generate prompt-ids past vocab row 2": _c("generate --prompt-ids 1;2,999", 2, "--prompt-ids"),
    "generate prompt-ids past vocab model": _c("generate --model {tiny} --prompt-ids 300", 2, "--prompt-ids"),
    "generate prompt empty": _c("generate --prompt=", 2, "--prompt"),
    "generate prompt for a preset": _c("generate --prompt hello", 2, "--prompt"),
    "generate prompt no tokenizer": _c("generate --model {tiny} --prompt hello", 2, "--prompt"),
    "generate past max positions": _c("generate --prompt-ids 1,2 --max-new-tokens 1023", 2, "--allow-long"),
    "generate past max positions model": _c("generate --model {tiny} --max-new-tokens 2000", 2, "--max-new-tokens"),
    "generate unknown preset": _c("generate --preset tiny3", 2, "--preset"),
    "generate missing model": _c("generate --model {empty}/nope", 2, "--model"),
    "generate model is a file": _c("generate --model {file}", 2, "--model"),
    "generate model without config": _c("generate --model {empty}", 1, "config.json"),
    "generate dtype": _c("generate --dtype float64", 2, "--dtype"),
    "generate preset too large": _c("generate --preset deepseek-v3", 2, "--preset"),  # 2,500 GiB in fp32
    "generate model too large": _c("generate --model {v3}", 2, "--model"),  # 2,500 GiB
    "verify tokens 0": _c("verify --model {bf16} --tokens 0", 2, "--tokens"),
    "verify tokens -1": _c("verify --model {bf16} --tokens -1", 2, "--tokens"),
    "verify tolerance -1": _c("verify --model {bf16} --tolerance -1", 2, "--tolerance"),
    "verify tolerance nan": _c("verify --model {bf16} --tolerance nan", 2, "--tolerance"),
    "verify tolerance inf": _c("verify --model {bf16} --tolerance inf", 2, "--tolerance"),
    "verify prompt-ids 1,,2": _c("verify --model {bf16} --prompt-ids 1,,2", 2, "--prompt-ids"),
    "verify prompt-ids past vocab": _c("verify --model {bf16} --prompt-ids 256", 2, "--prompt-ids"),
    "verify prompt-ids batch": _c("verify --model {bf16} --prompt-ids 1;2", 2, "--prompt-ids"),
    "verify missing model": _c("verify --model {empty}/nope", 2, "--model"),
    "verify model without config": _c("verify --model {empty}", 1, "config.json"),
    "convert workers 0": _c("convert {tiny} {empty}/out --workers 0", 2, "--workers"),
    "convert workers -2": _c("convert {tiny} {empty}/out --workers -2", 2, "--workers"),
    "convert workers nan": _c("convert {tiny} {empty}/out --workers nan", 2, "--workers"),
    "convert max-shard-size 0": _c("convert {tiny} {empty}/out --max-shard-size 0", 2, "--max-shard-size"),
    "convert max-shard-size -1": _c("convert {tiny} {empty}/out --max-shard-size -1", 2, "--max-shard-size"),
    "convert max-shard-size nan": _c("convert {tiny} {empty}/out --max-shard-size nan", 2, "--max-shard-size"),
    "convert max-shard-size inf": _c("convert {tiny} {empty}/out --max-shard-size inf", 2, "--max-shard-size"),
    "convert missing src": _c("convert {empty}/nope {empty}/out", 2, "src"),
    "convert dtype": _c("convert {tiny} {empty}/out --dtype fp64", 2, "--dtype"),
    "make-checkpoint unknown preset": _c("make-checkpoint {empty}/out --preset tiny3", 2, "--preset"),
    "make-checkpoint seed -1": _c("make-checkpoint {empty}/out --preset tiny --seed -1", 2, "--seed"),
    "make-checkpoint max-shard-size 0": _c(
        "make-checkpoint {empty}/out --preset tiny --max-shard-size 0", 2, "--max-shard-size"
    ),
    "make-checkpoint max-shard-size nan": _c(
        "make-checkpoint {empty}/out --preset tiny --max-shard-size nan", 2, "--max-shard-size"
    ),
    "verify-checkpoint missing": _c("verify-checkpoint {empty}/nope", 2, "directory"),
    "shard tp 0": _c("shard {tiny} {empty}/out --tp 0", 2, "--tp"),
    "shard tp -4": _c("shard {tiny} {empty}/out --tp -4", 2, "--tp"),
    "shard tp nan": _c("shard {tiny} {empty}/out --tp nan", 2, "--tp"),
    "shard ep 0": _c("shard {tiny} {empty}/out --tp 2 --ep 0", 2, "--ep"),
    "shard ep does not divide tp": _c("shard {tiny} {empty}/out --tp 4 --ep 3", 2, "--ep 3 must divide --tp 4"),
    "shard missing src": _c("shard {empty}/nope {empty}/out --tp 2", 2, "src"),
    "plan tp 0": _c("plan --preset tiny --tp 0", 2, "--tp"),
    "plan ep 0": _c("plan --preset tiny --tp 2 --ep 0", 2, "--ep"),
    "plan ep does not divide tp": _c("plan --preset tiny --tp 4 --ep 3", 2, "--ep 3 must divide --tp 4"),
    "plan batch 0": _c("plan --preset tiny --tp 1 --batch 0", 2, "--batch"),
    "plan seq-len 0": _c("plan --preset tiny --tp 1 --seq-len 0", 2, "--seq-len"),
    "plan seq-len past max positions": _c("plan --preset tiny --tp 1 --seq-len 1025", 2, "max_position_embeddings"),
    "plan tp does not divide heads": _c("plan --preset tiny --tp 3", 2, "num_attention_heads"),
    "plan unknown preset": _c("plan --preset tiny3 --tp 1", 2, "--preset"),
    "plan missing model": _c("plan --model {empty}/nope --tp 1", 2, "--model"),
    "plan model without config": _c("plan --model {empty} --tp 1", 1, "config.json"),
    "plan unknown device": _c("plan --preset tiny --tp 1 --device tpu", 2, "--device"),
    "demo tokens 0": _c("demo --workdir {empty}/w --tokens 0", 2, "--tokens"),
    "demo seed -1": _c("demo --workdir {empty}/w --seed -1", 2, "--seed"),
    "demo unknown preset": _c("demo --workdir {empty}/w --preset tiny3", 2, "--preset"),
    "golden max-new-tokens 0": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --max-new-tokens 0", 2, "--max-new-tokens"
    ),
    "golden max-new-tokens word": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --max-new-tokens many", 2, "--max-new-tokens"
    ),
    "golden max-memory word": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --max-new-tokens 2 --max-memory lots",
        2,
        "--max-memory",
    ),
    "golden max-memory 0": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --max-new-tokens 2 --max-memory 0GB",
        2,
        "--max-memory",
    ),
    "golden prompt-ids not ids": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,,2 --max-new-tokens 2", 2, "--prompt-ids"
    ),
    "golden prompt-ids past vocab": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,999 --max-new-tokens 2", 2, "--prompt-ids"
    ),
    "golden prompt rows of two lengths": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2;3 --max-new-tokens 2", 2, "--prompt-ids"
    ),
    "golden teacher-forced not ids": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --teacher-forced 1,x", 2, "--teacher-forced"
    ),
    "golden teacher-forced past vocab": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --teacher-forced 1,999", 2, "--teacher-forced"
    ),
    "golden teacher-forced batch": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2;3,4 --teacher-forced 5", 2, "--teacher-forced"
    ),
    "golden past max positions": _c(
        "golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2 --max-new-tokens 1023", 2, "max_position_embeddings"
    ),
    "golden no mode": _c("golden --model {tiny} --out {empty}/g.pt --prompt-ids 1,2", 2, "--max-new-tokens"),
    "golden out in missing directory": _c(
        "golden --model {tiny} --out {empty}/nope/g.pt --prompt-ids 1 --max-new-tokens 1", 2, "--out"
    ),
    "golden out is a directory": _c(
        "golden --model {tiny} --out {empty} --prompt-ids 1 --max-new-tokens 1", 2, "--out"
    ),
    "golden missing model": _c(
        "golden --model {empty}/nope --out {empty}/g.pt --prompt-ids 1 --max-new-tokens 1", 2, "--model"
    ),
    "golden model without config": _c(
        "golden --model {empty} --out {empty}/g.pt --prompt-ids 1 --max-new-tokens 1", 1, "config.json"
    ),
    "no command": _c("", 2, "COMMAND"),
    "unknown command": _c("frobnicate", 2, "frobnicate"),
}


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str


FORKS = Path(__file__).with_name("cli_forks.py")
THROUGH_THE_CONSOLE_SCRIPT = ("generate temperature nan", "generate prompt-ids past vocab", "plan model without config")


def dsv3_command() -> list[str]:
    """The installed console script when there is one (nox), else the same `main` as a module."""
    script = Path(sys.executable).with_name("dsv3")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dsv3_model.cli.main"]


def _environ(tripwire: Path, **env: str) -> dict[str, str]:
    environ = {**os.environ, **env}
    if "DSV3_DEBUG" not in env:
        environ.pop("DSV3_DEBUG", None)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tripwire), environ.get("PYTHONPATH")]))
    return environ


def run_dsv3(argv: list[str], tripwire: Path, **env: str) -> Run:
    """The console script in a subprocess, `torch` made unimportable."""
    result = subprocess.run(
        [*dsv3_command(), *argv],
        capture_output=True,
        text=True,
        env=_environ(tripwire, **env),
        timeout=120,
        check=False,
    )
    return Run(result.returncode, result.stderr)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    paths = {name: root / name for name in ("tiny", "bf16", "v3", "empty", "tripwire")}
    for path in paths.values():
        path.mkdir()
    save_config(preset("tiny"), paths["tiny"])
    save_config(preset("deepseek-v3"), paths["v3"])
    save_config(preset("tiny").model_copy(update={"quantization_config": None}), paths["bf16"])
    paths["file"] = root / "file"
    paths["file"].write_text("not a checkpoint\n")
    (paths["tripwire"] / "torch").mkdir()
    (paths["tripwire"] / "torch" / "__init__.py").write_text(TRIPWIRE)
    return paths


def _argv(case: Case, dirs: dict[str, Path]) -> list[str]:
    return [arg.format(**{name: str(path) for name, path in dirs.items()}) for arg in case.argv]


@pytest.fixture(scope="module")
def runs(dirs: dict[str, Path]) -> dict[str, Run]:
    """Every case, each in a child forked from one interpreter (`cli_forks.py`)."""
    result = subprocess.run(
        [sys.executable, str(FORKS)],
        input=json.dumps([_argv(case, dirs) for case in CASES.values()]),
        capture_output=True,
        text=True,
        env=_environ(dirs["tripwire"]),
        timeout=300,
        check=True,
    )
    return {name: Run(**run) for name, run in zip(CASES, json.loads(result.stdout), strict=True)}


def error_line(stderr: str, exit_status: int) -> str:
    """The one error line, after checking that everything before it is the usage block (exit 2 only)."""
    lines = stderr.rstrip("\n").splitlines()
    assert lines, "nothing on stderr"
    *before, last = lines
    if exit_status == 2 and before:
        assert before[0].startswith("usage: dsv3"), stderr
        assert all(line.startswith(" ") for line in before[1:]), stderr
    else:
        assert not before, f"more than one line:\n{stderr}"
    return last


@pytest.mark.parametrize("name", list(CASES))
def test_bad_option_is_one_line_naming_it(name: str, runs: dict[str, Run]) -> None:
    case, run = CASES[name], runs[name]
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == case.status, run.stderr
    line = error_line(run.stderr, case.status)
    assert line.startswith("dsv3"), line
    assert ": error: " in line, line
    assert case.names in line, line


@pytest.mark.parametrize("name", THROUGH_THE_CONSOLE_SCRIPT)
def test_the_console_script_gives_the_same(name: str, runs: dict[str, Run], dirs: dict[str, Path]) -> None:
    assert run_dsv3(_argv(CASES[name], dirs), dirs["tripwire"]) == runs[name]


@pytest.mark.parametrize(
    ("debug", "argv", "exit_status"),
    [
        ({"flag": "--debug"}, ["generate", "--prompt-ids", "1,999"], 2),
        ({"env": "1"}, ["generate", "--prompt-ids", "1,999"], 2),
        ({"flag": "--debug"}, ["plan", "--model", "{empty}", "--tp", "1"], 1),
        ({"env": "1"}, ["generate", "--model", "{empty}"], 1),
    ],
)
def test_debug_shows_the_traceback_with_the_same_line_and_status(
    debug: dict[str, str], argv: list[str], exit_status: int, dirs: dict[str, Path]
) -> None:
    argv = [arg.format(empty=dirs["empty"]) for arg in argv]
    env = {"DSV3_DEBUG": debug["env"]} if "env" in debug else {}
    flag = [debug["flag"]] if "flag" in debug else []
    run = run_dsv3([*flag, *argv], dirs["tripwire"], **env)
    assert run.returncode == exit_status, run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith(f"dsv3 {argv[0]}: error: ")


def test_without_debug_no_traceback_and_dsv3_debug_0_is_off(dirs: dict[str, Path]) -> None:
    run = run_dsv3(["generate", "--model", str(dirs["empty"])], dirs["tripwire"], DSV3_DEBUG="0")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert error_line(run.stderr, 1) == (f"dsv3 generate: error: {dirs['empty']}: directory has no config.json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,2,3", [[1, 2, 3]]), (" 4 , 5 ", [[4, 5]]), ("1,2;3", [[1, 2], [3]]), ("0", [[0]]), ("7;8;9", [[7], [8], [9]])],
)
def test_prompt_ids_parse(text: str, expected: list[list[int]]) -> None:
    assert options.prompt_ids(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty prompt"),
        (" ", "empty prompt"),
        ("1,,2", "id 2 is empty"),
        (",1", "id 1 is empty"),
        ("1;2,,3", "id 2 of prompt 2 is empty"),
        (";1", "prompt 1 of the batch is empty"),
        ("1,b", "id 2 is not an integer: 'b'"),
        ("-1", "id 1 must be >= 0, got -1"),
        (str(2**63), f"id 1 must be >= 0, got {2**63}"),  # not an int64
    ],
)
def test_prompt_ids_refuse(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        options.prompt_ids(text)


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (options.positive_int, "1", 1),
        (options.positive_int, " 12 ", 12),
        (options.non_negative_int, "0", 0),
        (options.seed, str(2**64 - 1), 2**64 - 1),
        (options.top_p, "1", 1.0),
        (options.top_p, "1e-9", 1e-9),
        (options.temperature, "0", 0.0),
        (options.temperature, "1.1754943508222875e-38", 1.1754943508222875e-38),
        (options.non_negative_float, "0", 0.0),
        (options.positive_float, "0.001", 0.001),
    ],
)
def test_boundaries_that_are_accepted(parse, text: str, value: float) -> None:
    assert parse(text) == value


def test_min_temperature_is_float32s_smallest_normal() -> None:
    import torch

    from dsv3_model.sampling import MIN_TEMPERATURE

    assert options.MIN_TEMPERATURE == MIN_TEMPERATURE == torch.finfo(torch.float32).tiny

"""The corruption table: every kind of damaged checkpoint (`corruption_cases.KINDS`) through the five
commands that read one: `convert`, `shard --tp 2`, `verify-checkpoint`, `generate --model`, `verify --model`.

Each must exit 1 with no traceback, print the error naming the file or tensor the damage touched, and
leave nothing in its destination that looks complete (convert: no `config.json` or index; shard: not
every rank file; no `.tmp` anywhere). The sound checkpoint passes all five first, so every failure is the
damage's. All kinds run through `main(argv)` in this process (torch is imported once); a subprocess run
of every kind, each with one of the five commands in turn, checks the same through the real entry
point (exit status and stderr of a fresh interpreter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from corruption_cases import KINDS

from dsv3_model.cli.main import main

TP = 2


def commands(source: Path, out: Path) -> dict[str, list[str]]:
    return {
        "convert": ["convert", str(source), str(out / "convert"), "--no-progress"],
        "shard": ["shard", str(source), str(out / "shard"), "--tp", str(TP)],
        "verify-checkpoint": ["verify-checkpoint", str(source), "--no-progress"],
        "generate": ["generate", "--model", str(source), "--max-new-tokens", "2"],
        "verify": ["verify", "--model", str(source), "--tokens", "2"],
    }


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dsv3 make-checkpoint --preset tiny --fp8`, in shards small enough to need an index (4 files)."""
    dst = tmp_path_factory.mktemp("sound") / "ckpt"
    assert main(["make-checkpoint", str(dst), "--preset", "tiny", "--fp8", "--max-shard-size", "0.0002"]) == 0
    return dst


def damaged(sound: Path, kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A damaged copy of `sound`: (the path to give the commands, what their error must name)."""
    copy = Path(shutil.copytree(sound, tmp_path / "damaged"))
    named = KINDS[kind](copy)
    source = Path(named) if Path(named).is_absolute() else copy
    return source, Path(named).name if Path(named).is_absolute() else named


# A path that is not a directory is refused while the command line is parsed: a usage error (exit 2).
PATH_ARGUMENT_KINDS = frozenset({"missing directory", "path is a file"})


def expected_status(kind: str) -> int:
    return 2 if kind in PATH_ARGUMENT_KINDS else 1


def run_main(argv: list[str]) -> int:
    """`main(argv)`'s exit status, also when argparse exits (as the console script would)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def check_failure(command: str, argv: list[str], rc: int, out: str, err: str, named: str, status: int = 1) -> None:
    where = f"{command}: rc={rc}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert rc == status, where
    assert "Traceback" not in err, where
    if command == "verify-checkpoint":  # lists every problem on stdout
        assert named in out or named in err, where
    else:
        errors = [line for line in err.splitlines() if line.startswith(f"dsv3 {command}: error:")]
        assert len(errors) == 1, where
        assert named in errors[0], where
    check_nothing_complete(command, argv)


def check_nothing_complete(command: str, argv: list[str]) -> None:
    if command not in ("convert", "shard"):
        return
    dst = Path(argv[2])
    if not dst.exists():
        return
    assert not list(dst.rglob("*.tmp")), sorted(dst.rglob("*"))
    if command == "convert":
        assert not (dst / "config.json").exists()
        assert not (dst / "model.safetensors.index.json").exists()
    else:
        ranks = [dst / "weights" / f"tp{r}_sharded_checkpoint.safetensors" for r in range(TP)]
        assert not all(path.exists() for path in ranks), ranks


def test_the_sound_checkpoint_passes_all_five(
    sound: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(`verify` gives transformers the FP8 checkpoint converted to fp32 by dsv3-weights: hf_bridge.)"""
    monkeypatch.delenv("DSV3_DEBUG", raising=False)
    runs = commands(sound, tmp_path)
    for command, argv in runs.items():
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, (command, out, err)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_checkpoint_fails_cleanly_in_every_command(
    kind: str, sound: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSV3_DEBUG", raising=False)
    source, named = damaged(sound, kind, tmp_path)
    capsys.readouterr()
    for command, argv in commands(source, tmp_path / "out").items():
        rc = run_main(argv)
        out, err = capsys.readouterr()
        check_failure(command, argv, rc, out, err, named, expected_status(kind))


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DSV3_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "dsv3_model.cli.main", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.slow  # one fresh interpreter (torch import, ~3 s) per kind
def test_damaged_checkpoints_fail_cleanly_as_subprocesses(sound: Path, tmp_path: Path) -> None:
    cases = []
    for i, kind in enumerate(sorted(KINDS)):
        source, named = damaged(sound, kind, tmp_path / str(i))
        command, argv = list(commands(source, tmp_path / str(i) / "out").items())[i % 5]
        cases.append((kind, command, argv, named))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: _run(case[2]), cases))
    for (kind, command, argv, named), result in zip(cases, results, strict=True):
        try:
            check_failure(
                command, argv, result.returncode, result.stdout, result.stderr, named, expected_status(kind)
            )
        except AssertionError as err:
            raise AssertionError(f"{kind}: {err}") from None

"""An output directory that one job owns: a lock against a second writer, and a resumable manifest.

`dsv3 convert` and `dsv3 shard` write many large files; either may be killed, run out of disk, or be
started twice on the same directory. Two rules make all of these safe:

- `locked(dst)`: an exclusive `fcntl.flock` on `dst/.dsv3.lock`, taken without waiting, so a second
  process refuses at once, naming the holder's pid. The kernel drops the lock when its holder dies
  (SIGKILL included), so a stale lock file never blocks the rerun. The file is removed on exit; a
  process that opened the old file meanwhile notices (inode changed) and locks the new one.
- `Manifest`: the job's fingerprint (source files, their sizes and modification times, and every
  option that changes the output) and each finished file's CRC-32. A rerun of the same job keeps the
  finished files whose checksum matches and redoes the rest; a directory holding anything else (another
  job's files, or files without a manifest) is refused, so two runs' outputs never mix.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsv3_weights.errors import CheckpointError
from dsv3_weights.reader import CheckpointReader
from dsv3_weights.writer import TMP_SUFFIX, crc32_file, write_json_atomic

LOCK_NAME = ".dsv3.lock"


@contextmanager
def locked(dst: Path, job: str) -> Iterator[None]:
    """Hold `dst`'s lock for the block (creating `dst`); refuse at once if another process holds it."""
    dst.mkdir(parents=True, exist_ok=True)
    path = dst / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BlockingIOError(
                f"{dst}: another process (pid {holder}) is writing here ({path} is locked); wait for it to "
                f"finish or stop it, then rerun this {job}"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def source_fingerprint(reader: CheckpointReader) -> dict[str, Any]:
    """What identifies a source checkpoint: where it is, its files' sizes and times, its tensors."""
    files = {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in reader.files()}
    config = reader.directory / "config.json"
    tensors = {name: [reader.file_of(name).name, list(reader.shape(name)), str(reader.dtype(name))] for name in reader}
    return {
        "directory": str(reader.directory.resolve()),
        "files": files,
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "tensors": tensors,
    }


def job_fingerprint(reader: CheckpointReader, **options: Any) -> str:
    data = {"source": source_fingerprint(reader), "options": options, "format": 2}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class Manifest:
    """Finished files of one job in `dst` (`dst/NAME`), recorded as they complete."""

    def __init__(self, dst: Path, name: str, fingerprint: str, job: str) -> None:
        self.path = dst / name
        self.fingerprint = fingerprint
        self.files = self._load(dst, job)
        self._save()

    def _load(self, dst: Path, job: str) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            others = [p.name for p in sorted(dst.iterdir()) if p.name != LOCK_NAME and not p.name.endswith(TMP_SUFFIX)]
            if others:
                raise FileExistsError(
                    f"{dst}: not empty and not a {job} in progress (holds {others[:5]}); use a new or empty directory"
                )
            return {}
        try:
            manifest = json.loads(self.path.read_bytes())
            files = dict(manifest["shards"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{self.path}: unreadable manifest ({err}); use a new or empty directory") from err
        if manifest.get("fingerprint") != self.fingerprint:
            raise FileExistsError(
                f"{self.path}: records a {job} of another source or with other options; use a new or empty directory"
            )
        for tmp in dst.glob("*" + TMP_SUFFIX):  # our own interrupted writes
            tmp.unlink()
        return files

    def _save(self) -> None:
        write_json_atomic(self.path, {"fingerprint": self.fingerprint, "shards": self.files})

    def intact(self, path: Path) -> int | None:
        """Bytes of `path` if an earlier run finished it and it is unchanged; else forget it, None."""
        record = self.files.get(path.name)
        if record is not None and path.exists() and crc32_file(path) == record["crc32"]:
            return int(record["bytes"])
        self.files.pop(path.name, None)
        return None

    def record(self, name: str, crc32: str, nbytes: int) -> None:
        self.files[name] = {"crc32": crc32, "bytes": nbytes}
        self._save()

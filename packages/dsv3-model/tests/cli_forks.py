"""Run the `dsv3` entry point for many command lines in one interpreter: one forked child per command.

Each child gets the argv, a fresh stderr (a pipe) and exits as the console script would
(`sys.exit(main())`: an uncaught exception goes through `sys.excepthook`, so a traceback would show),
so its exit status and stderr are a real process's. The start-up (Python, pydantic, the command
modules) is paid once instead of once per case. Run as a script: JSON list of argvs on stdin, JSON list
of `{"returncode", "stderr"}` on stdout. POSIX only (fork); never imports torch itself.
"""

from __future__ import annotations

import json
import os
import sys

from dsv3_model.cli.main import main


def _child(argv: list[str], write_fd: int) -> None:
    """In the forked child: stderr into the pipe, then what the console script does; never returns."""
    os.dup2(write_fd, 2)
    sys.stderr = os.fdopen(2, "w", closefd=False)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the child ends with os._exit
    sys.argv = ["dsv3", *argv]
    try:
        status = main(argv)
    except SystemExit as exit_:
        code = exit_.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
        status = code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: BLE001 - exactly what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        status = 1
    sys.stderr.flush()
    os._exit(status)


def run_one(argv: list[str]) -> dict[str, object]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(argv, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        stderr = pipe.read().decode("utf-8", "replace")
    _, wait_status = os.waitpid(pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(wait_status), "stderr": stderr}


if __name__ == "__main__":
    json.dump([run_one(argv) for argv in json.load(sys.stdin)], sys.stdout)

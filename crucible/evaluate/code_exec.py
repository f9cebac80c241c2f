"""Run untrusted Python programs (HumanEval solutions with their tests) in separate, limited subprocesses.

This is process-level isolation only: each program runs in its own ``python -I`` interpreter, in a
fresh temporary working directory, with a minimal environment, stdin closed and (on Linux) limits
on address space, CPU time and file size. It does not stop a program from reading the file system
or using the network; the code sandbox with stronger isolation (no network, read-only file system)
comes in a later issue. Do not run model-generated code with this outside trusted machines.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

if sys.platform.startswith("linux"):
    import resource
else:  # pragma: no cover - limits are only applied on Linux
    resource = None

ExecutionStatus = Literal["passed", "failed", "timed_out"]

# The interpreter outside any virtual environment: programs see the standard library, not our packages.
BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 1 << 30
DEFAULT_FILE_BYTES = 16 << 20
STDERR_TAIL_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """How one program ended: ``passed`` (exit status 0), ``failed`` or ``timed_out``."""

    status: ExecutionStatus
    returncode: int | None
    stderr_tail: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def humaneval_program(prompt: str, solution: str, test: str, entry_point: str) -> str:
    """The program that checks a HumanEval completion: the prompt, the solution, the test and its call."""
    return f"{prompt}{solution}\n\n{test}\n\ncheck({entry_point})\n"


def _limits(cpu_seconds: int, memory_bytes: int, file_bytes: int) -> Callable[[], None] | None:
    """A preexec_fn setting the child's resource limits; it only calls setrlimit, because it runs
    between fork and exec where taking any lock another thread may hold could deadlock."""
    if resource is None:
        return None
    setrlimit = resource.setrlimit
    limits = ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_seconds),
              (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_CORE, 0))

    def apply() -> None:
        for which, value in limits:
            setrlimit(which, (value, value))

    return apply


def _kill_group(group: int) -> None:
    """Kill the program's process group: the program itself on a timeout, and anything it left running."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    with path.open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        stream.seek(max(0, stream.tell() - 4 * chars))
        return stream.read().decode("utf-8", "replace")[-chars:]


def run_python(program: str, timeout: float = DEFAULT_TIMEOUT_S, *, memory_bytes: int = DEFAULT_MEMORY_BYTES,
               file_bytes: int = DEFAULT_FILE_BYTES) -> ExecutionResult:
    """Run ``program`` in a fresh ``python -I`` subprocess (the base interpreter, standard library only)
    and report how it ended.

    The wall-clock ``timeout`` kills the whole process group; the CPU-time limit (``timeout`` rounded
    up, plus one second) catches a busy loop even when the wall clock is not watched. Output goes to
    files in the temporary directory, capped at ``file_bytes``; only the tail of stderr is kept.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crucible-exec-") as folder:
        workdir = Path(folder)
        (workdir / "program.py").write_text(program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1"}
        stderr_path = workdir / "stderr.txt"
        with (workdir / "stdout.txt").open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [BASE_PYTHON, "-I", "program.py"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=stderr, start_new_session=True, close_fds=True,
                preexec_fn=_limits(int(timeout) + 1, memory_bytes, file_bytes),
            )
            try:
                returncode = process.wait(timeout=timeout)
                timed_out = returncode == -signal.SIGXCPU
            except subprocess.TimeoutExpired:
                returncode, timed_out = None, True
            _kill_group(process.pid)
            returncode = process.wait() if returncode is None else returncode
        stderr_tail = _tail(stderr_path)
    if timed_out:
        status: ExecutionStatus = "timed_out"
    else:
        status = "passed" if returncode == 0 else "failed"
    return ExecutionResult(status, returncode, stderr_tail, time.monotonic() - started)


def run_programs(programs: Mapping[str, str] | Iterable[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT_S,
                 workers: int = 2) -> dict[str, ExecutionResult]:
    """Run each ``(name, program)`` with :func:`run_python`, ``workers`` at a time; results by name."""
    items = list(programs.items() if isinstance(programs, Mapping) else programs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-exec") as pool:
        results = pool.map(lambda item: run_python(item[1], timeout), items)
        return {name: result for (name, _), result in zip(items, results, strict=True)}

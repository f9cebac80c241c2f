"""The code sandbox against hostile programs: each is contained, reported with its reason, and leaves
nothing running; and the refusal (or explicit unsafe opt-in) where namespaces are unavailable."""

import os
import shutil
import socket
import textwrap

import psutil
import pytest

from crucible.sandbox import UNSAFE_ENV_VAR, Sandbox, SandboxUnavailableError, check_humaneval

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (scripts/setup.sh installs it)")

# Every hostile program starts by printing its PID namespace, so that the test can look for any
# process of that run still alive afterwards.
NAMESPACE_LINE = "import os\nprint(os.readlink('/proc/self/ns/pid'), flush=True)\n"


def hostile(body: str) -> str:
    return NAMESPACE_LINE + textwrap.dedent(body)


def survivors(result) -> list[psutil.Process]:
    """Processes of the run's PID namespace that still exist and are not zombies."""
    namespace = result.stdout_tail.splitlines()[0]
    assert namespace.startswith("pid:["), result
    assert namespace != os.readlink("/proc/self/ns/pid")  # the run had its own PID namespace
    alive = []
    for process in psutil.process_iter():
        try:
            if (os.readlink(f"/proc/{process.pid}/ns/pid") == namespace
                    and process.status() != psutil.STATUS_ZOMBIE):
                alive.append(process)
        except (OSError, psutil.Error):
            continue
    return alive


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    sandbox = Sandbox(timeout_s=5.0, max_processes=8, memory_bytes=256 << 20, scratch_bytes=1 << 20)
    assert sandbox.isolation == "namespaces"
    return sandbox


def test_a_plain_program_runs_with_stdin_the_standard_library_only_and_a_scrubbed_environment(sandbox, monkeypatch):
    monkeypatch.setenv("CRUCIBLE_TEST_SECRET", "hunter2")
    result = sandbox.run("import json, os, sys\n"
                         "print(input()[::-1], json.dumps(sorted(os.environ)), os.getcwd(), os.getuid() != 0)\n"
                         "import pytest\n", stdin="abc\n")
    assert result.status == "failed" and result.returncode == 1
    assert result.reason == "exit code 1: ModuleNotFoundError: No module named 'pytest'"
    assert result.stdout_tail == 'cba ["HOME", "LANG", "PATH", "PWD", "TMPDIR"] /tmp True\n'
    ok = sandbox.run("print('hi')")
    assert ok.passed and ok.reason == "exit code 0" and ok.stdout_tail == "hi\n" and ok.duration_s < 5


def test_an_infinite_loop_times_out_and_is_killed(sandbox):
    result = Sandbox(timeout_s=1.0).run(hostile("while True:\n    pass\n"))
    assert result.status == "timed_out" and result.reason == "timed out after 1 s" and result.returncode is None
    assert result.duration_s < 4
    assert survivors(result) == []


def test_a_cpu_limit_stops_a_busy_loop_before_the_wall_clock(sandbox):
    result = Sandbox(timeout_s=20.0, cpu_seconds=1).run("while True:\n    pass\n")
    assert result.status == "timed_out" and result.reason == "timed out: CPU time limit of 1 s"


def test_a_fork_bomb_is_capped_by_the_process_limit(sandbox):
    # First a bounded bomb proves the cap holds, so the unbounded one below cannot run away.
    bounded = sandbox.run("import os, time\nforked = 0\ntry:\n    for _ in range(40):\n"
                          "        if os.fork() == 0:\n            time.sleep(2)\n            os._exit(0)\n"
                          "        forked += 1\nexcept BlockingIOError:\n    pass\nprint(forked)\n")
    assert bounded.passed and 5 <= int(bounded.stdout_tail) <= 7, bounded  # 8 processes with the program
    result = sandbox.run(hostile("while True:\n    os.fork()\n"))
    assert result.status == "failed", result
    assert result.reason.startswith("resource limit: too many processes (max 8)")
    assert survivors(result) == []


def test_children_that_leave_the_session_die_with_the_run(sandbox):
    result = sandbox.run(hostile("""
        import time
        for _ in range(3):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(120)
                os._exit(0)
        time.sleep(0.5)
        print("children left behind")
    """))
    assert result.passed and "children left behind" in result.stdout_tail
    assert survivors(result) == []


def test_a_memory_bomb_hits_the_memory_limit(sandbox):
    result = sandbox.run(hostile("hoard = []\nwhile True:\n    hoard.append(bytearray(16 << 20))\n"))
    assert result.status == "failed" and result.reason == "memory limit (256 MiB): MemoryError", result
    assert survivors(result) == []


def test_the_program_cannot_write_outside_its_folder_nor_read_the_callers_files(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the caller's secret")
    escape = tmp_path / "escape.txt"
    result = sandbox.run(textwrap.dedent(f"""
        import os
        for path in [{str(escape)!r}, "/usr/escape.txt", "/escape.txt", "/etc/escape.txt", "/dev/escape.txt",
                     {os.path.join(os.getcwd(), "escape.txt")!r}]:
            try:
                open(path, "w").write("x")
                print("WROTE", path)
            except OSError as error:
                print("refused", path, type(error).__name__)
        for path in [{str(secret)!r}, "/etc/passwd", "/root/.bashrc", "/home", "/work", {os.getcwd()!r}]:
            try:
                print("READ", path, open(path).read() if os.path.isfile(path) else os.listdir(path))
            except OSError as error:
                print("refused", path, type(error).__name__)
        open("/tmp/mine.txt", "w").write("the one writable folder")
        try:
            open("/tmp/big.bin", "wb").write(bytes(2 << 20))
        except OSError as error:
            print("scratch full", error.strerror)
    """))
    assert result.passed, result
    assert "WROTE" not in result.stdout_tail and "READ" not in result.stdout_tail
    assert "the caller's secret" not in result.stdout_tail + result.stderr_tail
    assert "scratch full No space left on device" in result.stdout_tail
    assert not escape.exists() and not os.path.exists("escape.txt")


def test_the_network_is_unreachable(sandbox):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = sandbox.run(f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                             "    print('CONNECTED')\nexcept OSError as error:\n    print('refused', error)\n")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    assert result.passed and result.stdout_tail.startswith("refused") and "CONNECTED" not in result.stdout_tail


def test_killing_its_parent_or_the_caller_fails_the_run_only(sandbox):
    result = sandbox.run(hostile(f"""
        import signal
        for pid in ({os.getpid()}, {os.getppid()}, 1, -1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError as error:
                print(pid, type(error).__name__, flush=True)
        os.kill(os.getppid(), signal.SIGKILL)
    """))
    assert result.status == "failed" and "killed its parent" in result.reason, result
    assert psutil.Process(os.getpid()).is_running() and sandbox.run("print(1)").passed
    assert survivors(result) == []


def test_the_callers_environment_does_not_leak_through_proc(sandbox, monkeypatch):
    monkeypatch.setenv("CRUCIBLE_TEST_SECRET", "hunter2")
    result = sandbox.run("import os\n"
                         "for pid in ('self', os.getppid(), 1):\n"
                         "    try:\n        print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
                         "    except OSError as error:\n        print(pid, type(error).__name__)\n"
                         "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n")
    assert result.passed, result
    assert "hunter2" not in result.stdout_tail and "CRUCIBLE_TEST_SECRET" not in result.stdout_tail
    # A fresh /proc of its own PID namespace: the sandbox's init, the launcher and the program.
    assert result.stdout_tail.splitlines()[-1] == "[1, 2, 3]"


def test_run_many_keeps_the_order(sandbox):
    results = sandbox.run_many([f"print({n})" for n in range(4)], workers=2)
    assert [result.stdout_tail for result in results] == ["0\n", "1\n", "2\n", "3\n"]


def test_check_humaneval_needs_the_tests_to_finish():
    problem = {"task_id": "toy/0", "prompt": "def add(a, b):\n", "entry_point": "add",
               "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}
    assert check_humaneval(problem, "    return a + b\n").passed
    wrong = check_humaneval(problem, "    return None\n")
    assert wrong.status == "failed" and wrong.reason == "exit code 1: AssertionError"
    for early_exit in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        cheat = check_humaneval(problem, "    return None\n" + early_exit)
        assert cheat.status == "failed" and "before the tests finished" in cheat.reason, cheat


def test_without_namespaces_untrusted_code_is_refused(monkeypatch):
    monkeypatch.delenv(UNSAFE_ENV_VAR, raising=False)
    missing = Sandbox(bwrap_path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailableError, match=r"bubblewrap not found at '/nonexistent/bwrap'.*"
                                                      r"apt-get install bubblewrap.*user namespaces.*"
                                                      r"allow_unsafe_process_isolation=True"):
        missing.run("print(1)")
    monkeypatch.setenv(UNSAFE_ENV_VAR, "1")
    with pytest.raises(SandboxUnavailableError):  # an explicit False wins over the variable
        Sandbox(bwrap_path="/nonexistent/bwrap", allow_unsafe_process_isolation=False).run("print(1)")


@pytest.mark.parametrize("opt_in", ["parameter", "environment"])
def test_unsafe_process_isolation_runs_only_when_asked(opt_in, monkeypatch, tmp_path):
    monkeypatch.delenv(UNSAFE_ENV_VAR, raising=False)
    if opt_in == "environment":
        monkeypatch.setenv(UNSAFE_ENV_VAR, "1")
    unsafe = Sandbox(bwrap_path="/nonexistent/bwrap", timeout_s=1.0,
                     allow_unsafe_process_isolation=True if opt_in == "parameter" else None)
    assert unsafe.isolation == "process"
    result = unsafe.run("import os, sys\nprint(input(), sorted(os.environ), sys.flags.isolated)\n", stdin="x")
    assert result.passed and result.stdout_tail == "x ['HOME', 'LANG', 'PATH', 'TMPDIR'] 1\n"
    assert unsafe.run("assert False, 'no'").reason == "exit code 1: AssertionError: no"
    assert unsafe.run("while True:\n    pass\n").status == "timed_out"

"""Shared helpers and fixtures for black-box tests of the tcpkit program.

The tests drive the built program as a user would and use Python's own
socket module (or nc/socat) as the other side. Import the plain helpers with
``from conftest import run_tcpkit, TcpkitProcess, ...`` or use the fixtures.

Synchronisation is always a wait on a condition with a timeout
(``wait_for_line``, ``wait_for_port``, ``wait_until``), never a bare sleep.

Sanitizer builds: CTest sets TCPKIT_SANITIZER ("address" or "thread") and
TCPKIT_TIMEOUT_SCALE for the black-box tests of a build made with
-fsanitize=... (tests/CMakeLists.txt). Every helper here multiplies the
timeouts it is given by TCPKIT_TIMEOUT_SCALE (``scaled``), so a test keeps
its assertions and only waits longer for a slower program. The sanitizers
write their reports into a directory of this session (log_path), and a
report from any process a test started fails that test.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 10.0
# "address" (ASan+UBSan), "thread" (TSan) or "" for a plain build.
SANITIZER = os.environ.get("TCPKIT_SANITIZER", "")
TIMEOUT_SCALE = float(os.environ.get("TCPKIT_TIMEOUT_SCALE", "1") or 1)


def scaled(seconds: Optional[float]) -> Optional[float]:
    """A timeout stretched for a slower build (TCPKIT_TIMEOUT_SCALE)."""
    return None if seconds is None else seconds * TIMEOUT_SCALE


def user_threads(pid: int) -> list[str]:
    """The names of a process's threads, less the kernel's io_uring workers."""
    names = [(Path(f"/proc/{pid}/task") / t / "comm").read_text().strip()
             for t in os.listdir(f"/proc/{pid}/task")]
    return [n for n in names if not n.startswith("iou-")]


def source_dir() -> Path:
    """The source tree (TCPKIT_SOURCE_DIR, set by CTest, else this checkout)."""
    return Path(os.environ.get("TCPKIT_SOURCE_DIR", REPO_ROOT))


def build_dir() -> Path:
    """The CMake build tree, as CTest passes it; tests that need one skip without it."""
    env = os.environ.get("TCPKIT_BUILD_DIR")
    if not env:
        pytest.skip("TCPKIT_BUILD_DIR is not set (run through CTest)")
    return Path(env)


def tcpkit_path() -> Path:
    """The program under test: $TCPKIT_BIN, else build/release/tcpkit."""
    env = os.environ.get("TCPKIT_BIN")
    return Path(env) if env else REPO_ROOT / "build" / "release" / "tcpkit"


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago.

    The kernel picks it (bind to port 0), so it is very unlikely to be taken
    again before the test binds it, but a test that can bind port 0 itself
    and read the port back should do that instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available() -> bool:
    """Whether [::1] can be bound (IPv6 is often disabled in containers)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def run_tcpkit(*args, timeout: float = DEFAULT_TIMEOUT, input: Optional[str] = None,
               env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs `tcpkit ARGS...` to completion; stdout and stderr are text."""
    return subprocess.run([str(tcpkit_path()), *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=scaled(timeout), env=env)


def private_hosts_file_works() -> bool:
    """Whether this process may give a child its own /etc/hosts (a mount
    namespace: root, or a kernel that lets users have one)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
                           capture_output=True)
    return probe.returncode == 0


def strace_works() -> bool:
    """Whether strace is installed and may trace here (ptrace allowed)."""
    if shutil.which("strace") is None:
        return False
    return subprocess.run(["strace", "-o", os.devnull, "true"], capture_output=True).returncode == 0


def wait_until(predicate: Callable[[], object], timeout: float = DEFAULT_TIMEOUT,
               interval: float = 0.02, message: str = "condition") -> object:
    """Polls `predicate` until it returns something truthy, and returns that.

    For state that offers no event to wait on (kernel socket tables, files);
    raises TimeoutError naming `message` when the time runs out.
    """
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def wait_for_port(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Waits until a TCP connect to host:port succeeds (someone listens)."""
    def connects() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_until(connects, timeout, interval=0.02, message=f"a listener on {host}:{port}")


class TcpkitProcess:
    """A long-running tcpkit subcommand (serve, relay, ...) under test.

    Use as a context manager or through the `tcpkit_process` fixture. Two
    background threads read stdout and stderr line by line into a queue, so
    a test can wait for a log line with a timeout; every line read is also
    kept in `stdout_lines` / `stderr_lines` for later assertions. Leaving
    the context stops the process: SIGTERM, then SIGKILL if it lingers.
    """

    def __init__(self, *args, stdin: bool = False, env: Optional[dict] = None,
                 argv: Optional[Iterable[str]] = None):
        self.argv = list(argv) if argv is not None else [str(tcpkit_path()), *map(str, args)]
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        # Lines that a wait for the other stream took off the queue: the
        # next wait for their own stream still sees them, in order.
        self._held: collections.deque = collections.deque()
        self._open_streams = 0
        self._threads: list[threading.Thread] = []
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1, env=env)
        for name, stream, sink in (("stdout", self.proc.stdout, self.stdout_lines),
                                   ("stderr", self.proc.stderr, self.stderr_lines)):
            thread = threading.Thread(target=self._pump, args=(name, stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
            self._open_streams += 1

    def _pump(self, name: str, stream, sink: list) -> None:
        for line in stream:
            line = line.rstrip("\n")
            sink.append(line)
            self._lines.put((name, line))
        self._lines.put((name, None))  # end of this stream

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def wait_for_line(self, pattern: str, timeout: float = DEFAULT_TIMEOUT,
                      stream: str = "any") -> re.Match:
        """Waits for the next line (on "stdout", "stderr" or "any") matching
        the regex `pattern` and returns its match. Lines of that stream read
        while waiting are consumed; they stay in stdout_lines / stderr_lines.
        Lines of the other stream are kept for the next wait on it: the two
        streams are read by two threads, so a line printed later on one may
        reach the queue before a line printed earlier on the other."""
        regex = re.compile(pattern)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        for held in list(self._held):
            name, line = held
            if stream in ("any", name):
                self._held.remove(held)
                match = regex.search(line)
                if match:
                    return match
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._open_streams == 0:
                break
            try:
                name, line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            if stream in ("any", name):
                match = regex.search(line)
                if match:
                    return match
            else:
                self._held.append((name, line))
        why = "the process closed its output" if self._open_streams == 0 else f"{timeout}s passed"
        raise AssertionError(f"no line matching {pattern!r} on {stream} ({why})\n{self.describe()}")

    def send(self, text: str) -> None:
        """Writes `text` to the process's stdin (start it with stdin=True)."""
        assert self.proc.stdin is not None, "started without stdin=True"
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # the process has exited: text a failed send() left buffered has no reader

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Waits for the process to exit by itself and returns its exit code."""
        code = self.proc.wait(timeout=scaled(timeout))
        self._join_readers()
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code
        (negative for a signal, as subprocess reports it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close_stdin()
        self._join_readers()
        return self.proc.returncode

    def _join_readers(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)

    def describe(self) -> str:
        status = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (f"command: {' '.join(self.argv)} ({status})\n"
                f"--- stdout ---\n" + "\n".join(self.stdout_lines) +
                f"\n--- stderr ---\n" + "\n".join(self.stderr_lines))

    def __enter__(self) -> "TcpkitProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def tcpkit_bin() -> Path:
    path = tcpkit_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"tcpkit program not found at {path}: build it or set TCPKIT_BIN")
    return path


@pytest.fixture
def free_port() -> int:
    """A free loopback port (see pick_free_port)."""
    return pick_free_port()


@pytest.fixture
def tcpkit(tcpkit_bin) -> Callable[..., subprocess.CompletedProcess]:
    """run_tcpkit, after checking that the program exists."""
    return run_tcpkit


@pytest.fixture
def tcpkit_process(tcpkit_bin):
    """Starts long-running tcpkit subcommands; all are stopped at teardown.

        server = tcpkit_process("serve", "--port", port)
        server.wait_for_line(r"listening on")
    """
    started: list[TcpkitProcess] = []

    def start(*args, **kwargs) -> TcpkitProcess:
        process = TcpkitProcess(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


def listening_on(port: int) -> bool:
    """Whether some socket is in LISTEN state on `port` (IPv4 or IPv6), read
    from /proc/net/tcp*. Unlike wait_for_port it makes no connection, so it
    suits peers that serve only one (socat without fork, nc -l)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


def wait_for_listener(port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Waits until something listens on `port`, without connecting to it."""
    wait_until(lambda: listening_on(port), timeout, message=f"a listener on port {port}")


class PeerServer:
    """The tutorial's server in a background thread: socket -> bind (loopback,
    port 0) -> listen -> accept, then `handler(conn)` for each of
    `connections` connections, one after another.

        def reply(conn):
            while data := conn.recv(1024):
                conn.sendall("收到了你的訊息".encode())
        with PeerServer(reply) as server:
            run_tcpkit("connect", "127.0.0.1", server.port, "--send", "hi")

    Accepted sockets get `timeout`, so a handler never blocks forever.
    Leaving the context stops accepting, joins the thread and re-raises what
    the handler raised, so an assertion inside the server fails the test.
    """

    def __init__(self, handler: Callable[[socket.socket], object], connections: int = 1,
                 host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT):
        self.handler = handler
        self.connections = connections
        self.timeout = scaled(timeout)
        self.error: Optional[BaseException] = None
        self.accepted = 0
        self._closing = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            for _ in range(self.connections):
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    if not self._closing:
                        raise
                    raise AssertionError(f"the peer server was closed after {self.accepted} of "
                                         f"{self.connections} expected connections") from None
                self.accepted += 1
                with conn:
                    conn.settimeout(self.timeout)
                    self.handler(conn)
        except BaseException as e:  # re-raised in the test's thread
            self.error = e
        finally:
            self.done.set()

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Waits until every connection has been handled; re-raises the
        handler's exception."""
        timeout = scaled(timeout)
        if not self.done.wait(timeout):
            raise TimeoutError(f"timed out after {timeout}s waiting for the peer server")
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        # shutdown() wakes a thread blocked in accept(); close() alone would not.
        self._closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(self.timeout)

    def __enter__(self) -> "PeerServer":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close()
        if exc_type is None and self.error is not None:
            raise self.error


# ---- sanitizer reports --------------------------------------------------------

# The sanitizers' runtime options that tell them where to write a report; every
# process a test starts inherits them. Each report is a file REPORT_DIR/report.PID.
SANITIZER_OPTION_VARIABLES = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS")
REPORT_DIR: Optional[Path] = None


def pytest_configure(config) -> None:
    global REPORT_DIR
    if not SANITIZER:
        return
    REPORT_DIR = Path(tempfile.mkdtemp(prefix="tcpkit-sanitizer-"))
    for variable in SANITIZER_OPTION_VARIABLES:
        options = os.environ.get(variable, "")
        os.environ[variable] = (options + ":" if options else "") + f"log_path={REPORT_DIR}/report"


def pytest_unconfigure(config) -> None:
    if REPORT_DIR is not None and not any(REPORT_DIR.iterdir()):
        REPORT_DIR.rmdir()


def sanitizer_reports() -> set[Path]:
    return set(REPORT_DIR.iterdir()) if REPORT_DIR is not None else set()


def describe_reports(paths: Iterable[Path]) -> str:
    return "\n".join(f"--- {path.name} ---\n{path.read_text(errors='replace')}" for path in sorted(paths))


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    """Fails the test when a process it started wrote a sanitizer report.
    Autouse fixtures are set up first, so this one is torn down after the
    fixtures that stop the test's processes (their exit reports count)."""
    before = sanitizer_reports()
    yield
    new = sanitizer_reports() - before
    if new:
        pytest.fail(f"{SANITIZER} sanitizer report(s) from a process of this test:\n{describe_reports(new)}",
                    pytrace=False)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Reports written after the last test's teardown (module-scoped
    fixtures' processes) still fail the run."""
    reports = sanitizer_reports()
    if not reports:
        return
    print(f"\n{SANITIZER} sanitizer report(s) in {REPORT_DIR}:\n{describe_reports(reports)}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


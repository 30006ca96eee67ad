"""--io-backend epoll|uring on the commands that run event loops: each
backend serves, io_uring really is used when asked for (and sends an echo's
bytes through the ring, not with a send() each), and where a seccomp filter
forbids io_uring the program says so in one line and runs on epoll."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, SANITIZER, run_tcpkit, scaled, tcpkit_path
from serve_util import ack_round_trip, connect, start_serve

# Starts a program with io_uring_setup forbidden (EPERM) by a seccomp filter,
# as container runtimes' profiles do; the filter survives the exec.
SECCOMP_LAUNCHER = r"""
import ctypes, os, struct, sys
NR_IO_URING_SETUP = 425  # the same number on every architecture
insns = [
    (0x20, 0, 0, 0),                        # load seccomp_data.nr
    (0x15, 0, 1, NR_IO_URING_SETUP),        # io_uring_setup?
    (0x06, 0, 0, 0x00050000 | 1),           # return ERRNO(EPERM)
    (0x06, 0, 0, 0x7FFF0000),               # return ALLOW
]
code = b"".join(struct.pack("HBBI", *i) for i in insns)
buf = ctypes.create_string_buffer(code, len(code))
prog = struct.pack("HxxxxxxP", len(insns), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0                                  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.c_char_p(prog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP
os.execv(sys.argv[1], sys.argv[1:])
"""


def uses_io_uring(pid: int) -> bool:
    """Whether the process holds an io_uring descriptor; descriptors that
    close while we look (a sanitizer's runtime opens and closes its own) are
    skipped."""
    def target(fd: Path) -> str:
        try:
            return os.readlink(fd)
        except FileNotFoundError:
            return ""
    return any(target(fd) == "anon_inode:[io_uring]" for fd in Path(f"/proc/{pid}/fd").iterdir())


def test_each_backend_serves(tcpkit_process):
    for backend, expect_ring in (("epoll", False), ("uring", True)):
        server, port = start_serve(tcpkit_process, "--io-backend", backend)
        with connect(port) as client:
            ack_round_trip(client, b"hello", "收到了你的訊息".encode())
        assert uses_io_uring(server.pid) == expect_ring, backend
        assert not any("io_uring" in line for line in server.stderr_lines)
        server.stop()


@pytest.mark.skipif(bool(SANITIZER), reason="under a sanitizer the seccomp launcher's process gets a false "
                    "UBSan vptr report; the fallback is covered there by poller_test's seccomp death test")
def test_forbidden_io_uring_falls_back_to_epoll_with_one_line(tcpkit_process):
    argv = [sys.executable, "-c", SECCOMP_LAUNCHER, str(tcpkit_path()), "serve", "--port", "0",
            "--threads", "2", "--io-backend", "uring"]
    server = tcpkit_process(argv=argv)
    line = server.wait_for_line(r"io_uring is unavailable", stream="stderr")
    assert line.string == ("tcpkit serve: io_uring is unavailable (io_uring_setup for an event loop: "
                           "Operation not permitted): using epoll")
    match = server.wait_for_line(r"listening on .*:(?P<port>\d+)", stream="stdout")
    with connect(int(match.group("port"))) as client:
        ack_round_trip(client, b"hello", "收到了你的訊息".encode())
    assert not uses_io_uring(server.pid)
    # One line, though the I/O threads' loops were created after it.
    assert sum("io_uring" in line for line in server.stderr_lines) == 1


def test_regression_the_chaos_relay_runs_on_the_backend_its_flag_names(tcpkit_process):
    # With --api (or --config) the relay ignored --io-backend: its loop was
    # created with the default, so only TCPKIT_IO_BACKEND chose. The flag
    # wins over the variable, as it does for every other command.
    for backend, other, expect_ring in (("uring", "epoll", True), ("epoll", "uring", False)):
        env = dict(os.environ, TCPKIT_IO_BACKEND=other)
        relay = tcpkit_process("relay", "--api", "127.0.0.1:0", "--io-backend", backend, env=env)
        relay.wait_for_line(r"chaos API on http://", stream="stdout")
        assert uses_io_uring(relay.pid) == expect_ring, backend
        relay.stop()


def test_unknown_backend_is_a_usage_error():
    result = run_tcpkit("serve", "--io-backend", "kqueue")
    assert result.returncode == 2
    assert "kqueue" in result.stderr


def server_calls(tcpkit_process, backend: str, rounds: int, env: dict | None = None) -> dict[str, int]:
    """`strace -c -f` on `tcpkit serve --mode echo --io-backend BACKEND`
    while one client makes `rounds` 16-byte round trips: the server's calls
    that send, read and wait. A variable set to None in env is unset."""
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    server, port = start_serve(tcpkit_process, "--mode", "echo", "--quiet", "--io-backend", backend,
                               env=merged)
    if any("io_uring is unavailable" in line for line in server.stderr_lines):
        pytest.skip(f"io_uring is unavailable here: {server.stderr_lines[0]}")
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=sendto,sendmsg,read,readv,recvfrom,recvmsg,epoll_wait,epoll_pwait,epoll_pwait2,io_uring_enter", "-o", out.name,
                                   "-p", str(server.pid)], stderr=subprocess.PIPE, text=True)
        try:
            # strace says "attached" on stderr once it holds every thread
            # ("Process N attached", or "... attached with M threads").
            line = tracer.stderr.readline()
            if "attached" not in line:
                pytest.skip(f"strace cannot attach here (ptrace forbidden?): {line.strip()}")
            with connect(port, nodelay=True) as client:
                for i in range(rounds):
                    # A pause between round trips: the server, slowed by
                    # strace, is back in its wait before the next message
                    # comes, so every round finds it idle, as the counts
                    # below expect (without it, a server slower than this
                    # client found each message already waiting).
                    time.sleep(0.001)
                    message = f"{i:015d}\n".encode()
                    client.sendall(message)
                    got = b""
                    while len(got) < len(message):
                        chunk = client.recv(64)
                        assert chunk, "the server closed"
                        got += chunk
                    assert got == message
                # The end: our FIN, and the server's answering FIN once it
                # has seen ours, so its reading of the end is traced too.
                client.shutdown(socket.SHUT_WR)
                assert client.recv(64) == b""
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=scaled(DEFAULT_TIMEOUT))
        summary = out.read()
    server.stop()
    calls = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$",
                                                                summary, re.M)}
    return calls


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (scripts/install-deps "
                    "installs it): it counts the server's system calls")
def test_uring_receives_echoes_through_the_ring_and_sends_there_when_idle(tcpkit_process):
    # epoll: a read and a send() per echo, and a read that finds the end.
    # io_uring: the echoes and the end arrive as the ring's completions, so
    # the server makes no read call at all (one connection's small messages
    # fit the ring's buffers). Its echoes leave as ring requests too, with no
    # send() each, after a wait that found the loop idle: every echo here,
    # as the client waits for each. TCPKIT_URING_SEND=1 sends through the
    # ring always, =0 by send() always. The waits are counted too: they show
    # that strace saw the server.
    rounds = 200

    def calls(counts, *names):
        return sum(counts.get(name, 0) for name in names)
    epoll = server_calls(tcpkit_process, "epoll", rounds)
    assert calls(epoll, "epoll_wait", "epoll_pwait", "epoll_pwait2") > 0, epoll
    assert calls(epoll, "sendto", "sendmsg") >= rounds, epoll
    assert calls(epoll, "read", "readv", "recvfrom", "recvmsg") >= rounds + 1, epoll
    plain = server_calls(tcpkit_process, "uring", rounds, env={"TCPKIT_URING_SEND": "0"})
    assert plain.get("io_uring_enter", 0) > 0, plain
    assert calls(plain, "sendto", "sendmsg") >= rounds, plain
    # Not even for the end: the receive's completion says so itself.
    assert calls(plain, "read", "readv", "recvfrom", "recvmsg") == 0, plain
    ring_sends = server_calls(tcpkit_process, "uring", rounds, env={"TCPKIT_URING_SEND": "1"})
    assert ring_sends.get("io_uring_enter", 0) > 0, ring_sends
    assert calls(ring_sends, "sendto", "sendmsg") < rounds / 10, ring_sends
    assert calls(ring_sends, "read", "readv", "recvfrom", "recvmsg") == 0, ring_sends
    idle_sends = server_calls(tcpkit_process, "uring", rounds, env={"TCPKIT_URING_SEND": None})
    assert calls(idle_sends, "sendto", "sendmsg") < rounds / 2, idle_sends
    assert calls(idle_sends, "read", "readv", "recvfrom", "recvmsg") == 0, idle_sends

"""Helpers shared by the black-box tests of `tcpkit serve` (test_serve.py,
test_serve_chat.py). Clients are plain Python sockets written in the style of
the tutorial's client: socket -> connect -> send -> recv -> close.

Every wait has a timeout; nothing synchronises with a bare sleep. The
timeouts given to these helpers are stretched by TCPKIT_TIMEOUT_SCALE
(conftest.scaled) for sanitizer builds.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path
from typing import Optional

from conftest import DEFAULT_TIMEOUT, TcpkitProcess, scaled

# The tutorial server's reply: "收到了你的訊息" ("got your message").
DEFAULT_REPLY = "收到了你的訊息"

# Text log lines begin with an ISO-8601 local time stamp with milliseconds.
STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3} "
STAMP_RE = re.compile("^" + STAMP)
LISTENING_RE = (r"listening on (?P<host>[^ ]+):(?P<port>\d+) \(mode (?P<mode>\w+), "
                r"framing (?P<framing>\w+), encoding (?P<encoding>[^)]+)\)")


def own_process_name() -> str:
    return Path("/proc/self/comm").read_text().strip()


def start_serve(tcpkit_process, *args, timeout: float = DEFAULT_TIMEOUT,
                port: object = 0, env: dict | None = None) -> tuple[TcpkitProcess, int]:
    """Starts `tcpkit serve --port PORT ARGS...` (in `env`, when given) and
    waits for its (first) listening line; returns the process and the port it
    really listens on."""
    server = tcpkit_process("serve", "--port", port, *args, **({"env": env} if env is not None else {}))
    match = server.wait_for_line(LISTENING_RE, timeout=timeout, stream="stdout")
    return server, int(match.group("port"))


def connect(port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT,
            nodelay: bool = False, rcvbuf: Optional[int] = None) -> socket.socket:
    """A client socket as in the tutorial (AF_INET, SOCK_STREAM, connect)."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if nodelay:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.settimeout(scaled(timeout))
    client.connect((host, port))
    return client


def peer_name(client: socket.socket) -> str:
    """How the server names this client in its log: 127.0.0.1:PORT."""
    host, port = client.getsockname()[:2]
    return f"{host}:{port}"


def recv_exact(sock: socket.socket, n: int, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Reads exactly n bytes; fails on EOF or when the time runs out."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    data = bytearray()
    while len(data) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s: got {len(data)} of {n} bytes: "
                                 f"{bytes(data[:200])!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {n} bytes: {bytes(data[:200])!r}")
        data += chunk
    return bytes(data)


def recv_line(sock: socket.socket, buffer: bytearray, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Reads one "\\n"-terminated line (without the "\\n"); `buffer` keeps
    what was read past it for the next call."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for a line; "
                                 f"have {bytes(buffer[:200])!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF while waiting for a line; have {bytes(buffer[:200])!r}")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def recv_until_eof(sock: socket.socket, timeout: float = DEFAULT_TIMEOUT,
                   limit: int = 64 << 20) -> tuple[bytes, Optional[str]]:
    """Reads until the peer closes. Returns the bytes and how it ended:
    None for an orderly EOF, "reset" for ECONNRESET. Fails on timeout."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    data = bytearray()
    while len(data) <= limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for EOF; "
                                 f"got {len(data)} bytes: {bytes(data[:200])!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), None
        data += chunk
    raise AssertionError(f"more than {limit} bytes without EOF")


def assert_closed_by_server(sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The server closed this connection (EOF or reset) within `timeout`;
    returns whatever arrived before that."""
    data, _how = recv_until_eof(sock, timeout)
    return data


def frame(payload: bytes) -> bytes:
    """A length-framed message: u32 big-endian length, then the payload."""
    return struct.pack(">I", len(payload)) + payload


def recv_frame(sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    (length,) = struct.unpack(">I", recv_exact(sock, 4, timeout))
    return recv_exact(sock, length, timeout)


def ack_round_trip(sock: socket.socket, payload: bytes, reply: bytes,
                   timeout: float = DEFAULT_TIMEOUT) -> None:
    """Tutorial-style exchange in raw framing: send, then read the reply."""
    sock.sendall(payload)
    got = recv_exact(sock, len(reply), timeout)
    assert got == reply


def message_lines(server: TcpkitProcess) -> list[str]:
    return [line for line in server.stdout_lines if " message from " in line]


def tcp_states_on_port(port: int) -> list[str]:
    """Kernel TCP states (hex codes from /proc/net/tcp) of sockets whose
    local port is `port` ("06" is TIME_WAIT, "0A" LISTEN)."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                states.append(fields[3])
    return states


def find_line(server: TcpkitProcess, pattern: str, stream: str = "stdout") -> Optional[re.Match]:
    """The first line seen so far (on stdout or stderr) that matches."""
    regex = re.compile(pattern)
    lines = server.stdout_lines if stream == "stdout" else server.stderr_lines
    for line in list(lines):
        match = regex.search(line)
        if match:
            return match
    return None


def wait_log(server: TcpkitProcess, pattern: str, timeout: float = DEFAULT_TIMEOUT,
             stream: str = "stdout") -> re.Match:
    """Waits until some line seen on `stream` (old or new) matches `pattern`.
    Unlike wait_for_line it does not depend on the order of the lines."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        match = find_line(server, pattern, stream)
        if match:
            return match
        if time.monotonic() >= deadline or (server.returncode is not None and
                                            not any(t.is_alive() for t in server._threads)):
            match = find_line(server, pattern, stream)
            if match:
                return match
            raise AssertionError(f"no {stream} line matching {pattern!r} within {timeout}s\n"
                                 f"{server.describe()}")
        time.sleep(0.01)


def count_lines(server: TcpkitProcess, pattern: str) -> int:
    regex = re.compile(pattern)
    return sum(1 for line in list(server.stdout_lines) if regex.search(line))


class ChatClient:
    """A chat member: a Python socket client that sends and reads whole lines."""

    def __init__(self, port: int, **kwargs):
        self.sock = connect(port, **kwargs)
        self.name = peer_name(self.sock)
        self.buffer = bytearray()

    def say(self, text: str) -> None:
        self.sock.sendall((text + "\n").encode())

    def line(self, timeout: float = 10) -> str:
        return recv_line(self.sock, self.buffer, timeout).decode()

    def expect(self, *lines: str) -> None:
        for want in lines:
            got = self.line()
            assert got == want, f"{self.name} got {got!r}, expected {want!r}"

    def expect_silence(self, wait: float = 0.3) -> None:
        """Nothing more has arrived (used only where the spec says that a
        client gets nothing; the positive checks never rely on it)."""
        assert b"\n" not in self.buffer, bytes(self.buffer)
        self.sock.settimeout(wait)
        try:
            extra = self.sock.recv(65536)
        except socket.timeout:
            extra = b""
        assert extra == b"", f"{self.name} got unexpected {extra!r}"

    def close(self) -> None:
        self.sock.close()

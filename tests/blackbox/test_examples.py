"""Black-box tests of the example programs in examples/, which mirror the
tutorial step by step. The other side is Python's own socket module, used
the way the tutorial's Python client and server use it.

Every wait has a timeout: sockets get one with settimeout(), processes are
read through TcpkitProcess (a queue with a timeout) and are stopped at
teardown whatever happened."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from typing import Callable

import pytest

from conftest import DEFAULT_TIMEOUT, TcpkitProcess, build_dir, ipv6_loopback_available, source_dir

REPLY = "收到了你的訊息".encode()
LISTENING = r"listening on 127\.0\.0\.1:(\d+)$"


def example(name: str) -> str:
    path = build_dir() / "examples" / name
    if not path.is_file():
        pytest.fail(f"example {name} was not built at {path}")
    return str(path)


@pytest.fixture
def start():
    """Starts example programs; all are stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[TcpkitProcess] = []

    def run(name: str, *args) -> TcpkitProcess:
        process = TcpkitProcess(argv=[example(name), *map(str, args)])
        started.append(process)
        return process

    yield run
    for process in reversed(started):
        process.stop()


def start_server(start, name: str, *args) -> tuple[TcpkitProcess, int]:
    """Starts a server example and reads its real port from "listening on ..."."""
    server = start(name, *args)
    match = server.wait_for_line(LISTENING, stream="stdout")
    return server, int(match.group(1))


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    # The tutorial's client steps 1 and 2: create the socket, connect.
    sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT)
    sock.settimeout(DEFAULT_TIMEOUT)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes: {data!r}")
        data += chunk
    return data


def ask(sock: socket.socket, message: bytes) -> bytes:
    """Sends one message and reads the one reply the servers give to it."""
    sock.sendall(message)
    return recv_exact(sock, len(REPLY))


def test_every_example_is_built():
    sources = sorted(p.stem for p in (source_dir() / "examples").glob("*.cpp"))
    assert {"tcp_client", "tcp_server", "server_loop", "server_threads"} <= set(sources)
    for name in sources:
        assert os.access(example(name), os.X_OK), name


# --- tcp_server: accept one client, one message, one reply, close ---------------------------

def test_tcp_server_replies_then_closes_and_exits(start):
    server, port = start_server(start, "tcp_server", 0)
    with connect(port) as sock:
        assert ask(sock, b"hello") == REPLY
        # The server closes its socket after replying: recv returns 0 bytes.
        assert sock.recv(1024) == b""
        client_port = sock.getsockname()[1]
    assert server.wait() == 0
    assert f"message from 127.0.0.1:{client_port}: hello" in server.stdout_lines


def test_tcp_server_serves_the_given_number_of_clients_in_turn(start):
    server, port = start_server(start, "tcp_server", 0, 2)
    for text in (b"first", b"second"):
        with connect(port) as sock:
            assert ask(sock, text) == REPLY
            assert sock.recv(1024) == b""
    assert server.wait() == 0
    messages = [line.split(": ", 1)[1] for line in server.stdout_lines if line.startswith("message from")]
    assert messages == ["first", "second"]


def test_tcp_server_restarts_on_the_same_port_at_once(start):
    # The tutorial's section 7: the server closed the connection first, so its
    # side sits in TIME_WAIT; SO_REUSEADDR lets the restarted server bind anyway.
    first, port = start_server(start, "tcp_server", 0)
    with connect(port) as sock:
        assert ask(sock, b"before restart") == REPLY
        assert sock.recv(1024) == b""
    assert first.wait() == 0
    second, again = start_server(start, "tcp_server", port)
    assert again == port
    with connect(port) as sock:
        assert ask(sock, b"after restart") == REPLY
    assert second.wait() == 0


def test_server_rejects_a_bad_port(start):
    server = start("tcp_server", "70000")
    assert server.wait() == 2
    assert any("usage" in line for line in server.stderr_lines), server.describe()


# --- server_loop: one client, reply to every message until recv returns 0 -------------------

def test_server_loop_replies_to_every_message_until_the_client_closes(start):
    server, port = start_server(start, "server_loop", 0)
    with connect(port) as sock:
        client = "127.0.0.1:%d" % sock.getsockname()[1]
        for text in (b"one", b"two", "三".encode()):
            assert ask(sock, text) == REPLY
    server.wait_for_line(rf"client {client} closed the connection", stream="stdout")
    assert server.wait() == 0
    assert [line for line in server.stdout_lines if line.startswith("message from")] == [
        f"message from {client}: one", f"message from {client}: two", f"message from {client}: 三"]


def test_server_loop_sees_a_half_close_as_end_and_closes_too(start):
    server, port = start_server(start, "server_loop", 0)
    with connect(port) as sock:
        assert ask(sock, b"last words") == REPLY
        # FIN from us: the server's recv returns 0, it says so and closes, and
        # we still read its side to the end on our open half.
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""
    server.wait_for_line(r"closed the connection", stream="stdout")
    assert server.wait() == 0


def test_server_loop_serves_clients_one_after_another(start):
    server, port = start_server(start, "server_loop", 0, 2)
    for n in range(2):
        with connect(port) as sock:
            assert ask(sock, b"client %d" % n) == REPLY
        server.wait_for_line(r"closed the connection", stream="stdout")
    assert server.wait() == 0


# --- server_threads: a thread per client, many clients at once ------------------------------

def test_server_threads_serves_clients_at_the_same_time(start):
    server, port = start_server(start, "server_threads", 0, 3)
    socks = [connect(port) for _ in range(3)]
    try:
        # All three are connected before any is done. A server that served one
        # client at a time would never answer the last one while the first
        # stays open, and its recv would time out.
        for sock in reversed(socks):
            assert ask(sock, b"concurrent") == REPLY
        for sock in socks:
            assert ask(sock, b"again") == REPLY
    finally:
        for sock in socks:
            sock.close()
    assert server.wait() == 0
    assert sum("closed the connection" in line for line in server.stdout_lines) == 3
    assert sum(line.endswith(": concurrent") for line in server.stdout_lines) == 3


# --- tcp_client: against a Python server, like the tutorial's server ------------------------

def python_server(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(1)
    listener.settimeout(DEFAULT_TIMEOUT)
    return listener


def reply_and_see_the_client_close(conn: socket.socket) -> None:
    conn.sendall(REPLY)
    # The client closes after reading the reply: we see EOF.
    assert conn.recv(1024) == b""


def run_client_against(listener: socket.socket, host: str, message: str,
                       serve: Callable[[socket.socket], None] = reply_and_see_the_client_close
                       ) -> tuple[bytes, subprocess.CompletedProcess]:
    """Runs tcp_client against `listener`: reads its message, then `serve`
    answers on the accepted socket, which closes after it."""
    port = listener.getsockname()[1]
    client = subprocess.Popen([example("tcp_client"), host, str(port), message],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEFAULT_TIMEOUT)
            received = recv_exact(conn, len(message.encode()))
            serve(conn)
        out, err = client.communicate(timeout=DEFAULT_TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    return received, subprocess.CompletedProcess(client.args, client.returncode, out, err)


def test_tcp_client_sends_and_prints_the_reply():
    with python_server() as listener:
        received, result = run_client_against(listener, "127.0.0.1", "hello server")
        port = listener.getsockname()[1]
    assert received == b"hello server"
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"received from 127.0.0.1:{port}: 收到了你的訊息\n"


def test_tcp_client_over_ipv6():
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    with python_server("::1") as listener:
        received, result = run_client_against(listener, "::1", "v6")
        port = listener.getsockname()[1]
    assert received == b"v6"
    assert result.returncode == 0, result.stderr
    assert f"received from [::1]:{port}: " in result.stdout.decode()


def test_tcp_client_resolves_localhost():
    with python_server() as listener:
        received, result = run_client_against(listener, "localhost", "by name")
    assert received == b"by name"
    assert result.returncode == 0, result.stderr


def test_tcp_client_reads_a_reply_split_in_two_until_the_server_closes():
    # TCP may deliver one reply in two reads: the client keeps reading while
    # more follows, so it prints the whole reply, not its first piece.
    def reply_in_two_pieces(conn: socket.socket) -> None:
        conn.sendall(b"first half, ")
        time.sleep(0.1)
        conn.sendall(b"second half")

    with python_server() as listener:
        received, result = run_client_against(listener, "127.0.0.1", "hi", reply_in_two_pieces)
        port = listener.getsockname()[1]
    assert received == b"hi"
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"received from 127.0.0.1:{port}: first half, second half\n"


def test_tcp_client_lets_a_server_that_replies_and_closes_close_first():
    # The tutorial's TIME_WAIT lesson needs the server to be the side that
    # closes first: a server slow to close after its reply (descheduled, say)
    # must not find the client gone already.
    def reply_and_close_late(conn: socket.socket) -> None:
        conn.sendall(REPLY)
        readable, _, _ = select.select([conn], [], [], 0.15)
        assert not readable, "the client closed before the server did"

    with python_server() as listener:
        received, result = run_client_against(listener, "127.0.0.1", "hi", reply_and_close_late)
        port = listener.getsockname()[1]
    assert received == b"hi"
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"received from 127.0.0.1:{port}: 收到了你的訊息\n"


def test_tcp_client_reports_connection_refused_with_the_address():
    # Bound but not listening: the port is ours and a SYN to it gets RST.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        result = subprocess.run([example("tcp_client"), "127.0.0.1", str(port), "hi"],
                                capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    assert result.returncode == 1
    assert result.stderr.strip() == f"connect 127.0.0.1:{port}: Connection refused"


def test_tcp_client_usage():
    result = subprocess.run([example("tcp_client")], capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    assert result.returncode == 2
    assert "usage" in result.stderr

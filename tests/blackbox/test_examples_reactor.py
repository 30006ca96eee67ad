"""Black-box tests of the reactor examples in examples/: chat_server,
line_protocol_server and reconnecting_client. The other side is Python's own
socket module (and, for the client, a Python server that it can lose).

Every wait has a timeout: sockets get one with settimeout(), processes are
read through TcpkitProcess (a queue with a timeout) and are stopped at
teardown whatever happened."""

from __future__ import annotations

import socket
import struct

import pytest

from conftest import DEFAULT_TIMEOUT, TcpkitProcess, pick_free_port
from test_examples import connect, example, start  # noqa: F401  (start is a fixture)

LISTENING = r"listening on 127\.0\.0\.1:(\d+)"


def start_server(start, name: str, *args) -> tuple[TcpkitProcess, int]:
    server = start(name, *args)
    match = server.wait_for_line(LISTENING, stream="stdout")
    return server, int(match.group(1))


class LineReader:
    """Reads whole lines from a socket, keeping what follows the last one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pending = b""

    def line(self) -> str:
        while b"\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"connection closed before a whole line; pending {self.pending!r}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def at_eof(self) -> bool:
        return self.pending == b"" and self.sock.recv(4096) == b""


# --- chat_server -------------------------------------------------------------------------------

def test_chat_server_relays_lines_to_the_others_only(start):
    server, port = start_server(start, "chat_server", 0)
    with connect(port) as alice, connect(port) as bob:
        a, b = LineReader(alice), LineReader(bob)
        alice_name = "127.0.0.1:%d" % alice.getsockname()[1]
        bob_name = "127.0.0.1:%d" % bob.getsockname()[1]
        assert a.line() == f"welcome {alice_name}, 1 online"
        assert b.line() == f"welcome {bob_name}, 2 online"
        assert a.line() == f"* {bob_name} joined"

        # One line split over two sends, then two lines in one send: the
        # codec reassembles and splits them, whatever the reads look like.
        bob.sendall("你好, ".encode())
        bob.sendall("alice\nsecond\nthird\n".encode())
        assert [a.line() for _ in range(3)] == [f"{bob_name}: 你好, alice", f"{bob_name}: second",
                                                f"{bob_name}: third"]
        alice.sendall(b"hi bob\n")
        assert b.line() == f"{alice_name}: hi bob"

        bob.close()
        assert a.line() == f"* {bob_name} left"
    server.wait_for_line(rf"{alice_name} left: .* \(0 online\)", stream="stdout")
    assert server.returncode is None, "the server must keep running without clients"


def test_chat_server_drops_a_client_whose_line_is_too_long(start):
    server, port = start_server(start, "chat_server", 0)
    with connect(port) as sock:
        reader = LineReader(sock)
        assert reader.line().startswith("welcome ")
        sock.sendall(b"x" * 5000)  # over the 1 KiB limit, and no newline
        assert reader.at_eof()
    line = server.wait_for_line(r"left: ", stream="stdout").string
    assert "long" in line, line


def test_chat_server_rejects_a_bad_port(start):
    server = start("chat_server", "http")
    assert server.wait() == 2
    assert any("usage" in line for line in server.stderr_lines), server.describe()


# --- line_protocol_server ---------------------------------------------------------------------

def test_line_protocol_answers_requests_split_and_merged_by_the_network(start):
    server, port = start_server(start, "line_protocol_server", 0)
    assert server.stdout_lines[0].endswith("(line framing)")
    with connect(port) as sock:
        reader = LineReader(sock)
        sock.sendall(b"PI")  # half a request: no answer yet
        sock.sendall(b"NG\nUPPER mixed Case\nLEN \xe4\xbd\xa0\xe5\xa5\xbd\r\nECHO  two  spaces \nWHAT\n")
        assert [reader.line() for _ in range(5)] == [
            "PONG", "MIXED CASE", "6", " two  spaces ", "ERR unknown command 'WHAT'"]
        sock.sendall(b"QUIT\nPING\n")
        assert reader.line() == "BYE"
        assert reader.at_eof(), "the server closes after BYE and ignores what followed QUIT"


def test_line_protocol_with_length_prefix_framing(start):
    server, port = start_server(start, "line_protocol_server", 0, "length")
    assert server.stdout_lines[0].endswith("(length framing)")

    def frame(payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + payload

    with connect(port) as sock:
        # A payload may hold newlines: length framing does not care.
        data = frame(b"PING") + frame(b"ECHO a\nb") + frame(b"QUIT")
        sock.sendall(data[:6])
        sock.sendall(data[6:])
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == frame(b"PONG") + frame(b"a\nb") + frame(b"BYE")


def test_line_protocol_closes_on_an_oversized_frame(start):
    _, port = start_server(start, "line_protocol_server", 0, "length")
    with connect(port) as sock:
        sock.sendall(struct.pack(">I", 10 * 1024 * 1024))  # announces 10 MiB, over the 64 KiB limit
        assert sock.recv(1024) == b""


def test_line_protocol_rejects_an_unknown_framing(start):
    server = start("line_protocol_server", 0, "xml")
    assert server.wait() == 2
    assert any("usage" in line for line in server.stderr_lines)


# --- reconnecting_client ----------------------------------------------------------------------

def test_reconnecting_client_waits_for_the_server_then_sends_every_message(start):
    port = pick_free_port()
    client = start("reconnecting_client", f"127.0.0.1:{port}", 3)
    client.wait_for_line(rf"^attempt 1 failed: connect 127\.0\.0\.1:{port}: Connection refused$",
                         stream="stdout")
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        listener.settimeout(DEFAULT_TIMEOUT)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEFAULT_TIMEOUT)
            reader = LineReader(conn)
            for n in (1, 2, 3):
                line = reader.line()
                assert line == f"message {n}"
                conn.sendall(f"echo of {line}\n".encode())
            assert reader.at_eof(), "the client closes after the last reply"
    assert client.wait() == 0
    out = client.stdout_lines
    assert any(line.startswith(f"connected to 127.0.0.1:{port} after ") for line in out), out
    assert out[-3:] == ["reply 1: echo of message 1", "reply 2: echo of message 2", "reply 3: echo of message 3"]


def test_reconnecting_client_resends_after_losing_the_connection(start):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        listener.settimeout(DEFAULT_TIMEOUT)
        port = listener.getsockname()[1]
        client = start("reconnecting_client", f"127.0.0.1:{port}", 2)

        # First connection: answer message 1, then hang up on message 2.
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEFAULT_TIMEOUT)
            reader = LineReader(conn)
            assert reader.line() == "message 1"
            conn.sendall(b"one\n")
            assert reader.line() == "message 2"
        client.wait_for_line(r"^connection lost \(.*\), reconnecting$", stream="stdout")

        # Second connection: message 2 comes again and is answered.
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(DEFAULT_TIMEOUT)
            reader = LineReader(conn)
            assert reader.line() == "message 2"
            conn.sendall(b"two\n")
            assert reader.at_eof()
    assert client.wait() == 0
    assert [l for l in client.stdout_lines if l.startswith("reply")] == ["reply 1: one", "reply 2: two"]
    assert sum(l.startswith("connected to ") for l in client.stdout_lines) == 2


def test_reconnecting_client_gives_up_after_max_attempts(start):
    port = pick_free_port()
    client = start("reconnecting_client", f"127.0.0.1:{port}", 1, 3)
    assert client.wait(timeout=30) == 1
    assert client.stdout_lines == [
        f"attempt {n} failed: connect 127.0.0.1:{port}: Connection refused" for n in (1, 2, 3)] + ["giving up"]


def test_reconnecting_client_usage(start):
    client = start("reconnecting_client", "no-port-here")
    assert client.wait() == 2
    assert any("missing ':PORT'" in line for line in client.stderr_lines), client.describe()
    assert any("usage" in line for line in client.stderr_lines)

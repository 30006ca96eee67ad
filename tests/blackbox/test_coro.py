"""Black-box tests of the coroutine examples: coro_echo_server under ten
thousand concurrent clients on its one thread, never-reading and resetting
clients (the hostile suite's scenarios), the tutorial's server and client as
coroutines, and the coroutine chat room.

Every wait has a timeout; load runs are bounded in count and time, on
loopback only; processes are stopped at teardown."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import time

import pytest

from conftest import DEFAULT_TIMEOUT, TcpkitProcess, wait_until
from hostile_util import RSS_BOUNDS_APPLY, echo_load, loop_buffers_bound, open_fds, push_until_stalled, raise_nofile, rss_bytes
from test_examples import LISTENING, REPLY, connect, example, start  # noqa: F401  (start is a fixture)
from test_examples_reactor import LineReader

MiB = 1024 * 1024


def start_server(start, name: str, *args) -> tuple[TcpkitProcess, int]:
    server = start(name, *args)
    return server, int(server.wait_for_line(LISTENING, stream="stdout").group(1))


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def echo_round_trip(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(got)} of {len(payload)} bytes"
        got += chunk
    assert got == payload


# --- coro_echo_server ----------------------------------------------------------------------------

def test_coro_echo_server_serves_ten_thousand_clients_at_once_on_one_thread():
    connections = 10_000
    have = raise_nofile(connections + 512)
    if have < connections + 256:
        pytest.skip(f"RLIMIT_NOFILE hard limit {have} is too low for {connections} clients")
    process = TcpkitProcess(argv=["prlimit", f"--nofile={connections + 256}", example("coro_echo_server"), "0"])
    try:
        port = int(process.wait_for_line(LISTENING, stream="stdout").group(1))
        result = echo_load(port, connections, 1, 4096, timeout=120, seed=23)
        print(f"coro load: {result.ok}/{connections} byte-exact, {result.mismatched} mismatched, "
              f"{len(result.failed)} failed, peak {result.peak_open} open at once in {result.seconds:.1f} s")
        assert result.peak_open == connections, result.failed[:5]
        assert result.mismatched == 0
        assert result.failed == [], result.failed[:5]
        assert result.ok == connections
        assert result.bytes_received == result.bytes_sent
        assert threads_of(process.pid) == 1, "one thread serves every client"
        assert process.returncode is None
    finally:
        process.stop()


def test_coro_echo_server_echoes_every_byte_and_sees_the_close(start):
    server, port = start_server(start, "coro_echo_server", 0)
    rng = random.Random(5)
    with connect(port) as sock:
        for size in (1, 1000, 300_000):
            echo_round_trip(sock, rng.randbytes(size))
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(16) == b"", "the task ends at end of stream and closes"
    assert server.returncode is None


def test_coro_echo_server_never_reading_clients_cannot_grow_its_memory(start):
    """Clients push and never read: write_all waits at the high-water mark, the
    task stops reading, the stream pauses the socket; memory stays bounded and
    another client is served byte-exact meanwhile."""
    server, port = start_server(start, "coro_echo_server", 0)
    rng = random.Random(9)
    with connect(port) as probe:
        echo_round_trip(probe, rng.randbytes(1000))
        base_rss = rss_bytes(server.pid)
        hogs = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            hogs.append(s)
        cap = 256 * MiB
        pushed, in_time = push_until_stalled(hogs, cap, 40)
        assert in_time, "the hogs could still send when the time ran out"
        assert max(pushed) < cap, f"the server kept reading: {max(pushed)} bytes from one hog"
        grown = rss_bytes(server.pid) - base_rss
        # Per hog: the output up to the mark (4 MiB), the stream's read-ahead
        # (256 KiB) and one read past it; and the loop's own buffers.
        bound = len(hogs) * (4 * MiB + 2 * 256 * 1024) + 8 * MiB + loop_buffers_bound(len(hogs) + 1)
        print(f"never-readers pushed {sum(pushed) / MiB:.1f} MiB; RSS grew {grown / MiB:.1f} MiB (bound {bound / MiB:.1f})")
        if RSS_BOUNDS_APPLY:
            assert grown < bound
        for size in (1, 1000, 200_000):
            echo_round_trip(probe, rng.randbytes(size))
        for s in hogs:
            s.close()
    assert server.returncode is None


def test_coro_echo_server_survives_peers_that_reset_with_data_in_flight(start):
    server, port = start_server(start, "coro_echo_server", 0)
    idle = open_fds(server.pid)
    rng = random.Random(3)
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT)
        s.sendall(rng.randbytes(rng.randint(1, 200_000)))
        if i % 2:
            s.recv(1)  # an echo has started
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST, with data in flight both ways
    with connect(port) as sock:
        echo_round_trip(sock, rng.randbytes(100_000))
    wait_until(lambda: open_fds(server.pid) == idle, timeout=15,
               message="the reset clients' descriptors to be closed")
    assert server.returncode is None


def test_coro_echo_server_usage(start):
    result = subprocess.run([example("coro_echo_server")], capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    assert result.returncode == 2
    assert "usage" in result.stderr


# --- the tutorial's server and client, as coroutines ------------------------------------------

def test_coro_tutorial_server_replies_to_every_message_of_many_clients(start):
    server, port = start_server(start, "coro_tutorial_server", 0)
    with connect(port) as a, connect(port) as b:
        a.sendall("你好".encode())
        assert a.recv(1024) == REPLY
        b.sendall(b"hello")
        assert b.recv(1024) == REPLY
        server.wait_for_line(r"接收到來自127\.0\.0\.1:\d+的訊息:你好$", stream="stdout")
    server.wait_for_line(r"client 127\.0\.0\.1:\d+ closed the connection$", stream="stdout")


def test_coro_tutorial_client_talks_to_the_coro_tutorial_server(start):
    server, port = start_server(start, "coro_tutorial_server", 0)
    result = subprocess.run([example("coro_tutorial_client"), "127.0.0.1", str(port), "hello"],
                            capture_output=True, timeout=DEFAULT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == f"received from 127.0.0.1:{port}: 收到了你的訊息"
    server.wait_for_line(r"的訊息:hello$", stream="stdout")


def test_coro_tutorial_client_reports_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        result = subprocess.run([example("coro_tutorial_client"), "127.0.0.1", str(port), "hi"],
                                capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    assert result.returncode == 1
    assert f"connect 127.0.0.1:{port}" in result.stderr or f"127.0.0.1:{port}" in result.stderr
    assert "refused" in result.stderr


# --- coro_chat_server ----------------------------------------------------------------------------

def test_coro_chat_server_relays_lines_to_the_others(start):
    server, port = start_server(start, "coro_chat_server", 0)
    with connect(port) as alice:
        a = LineReader(alice)
        alice_name = "127.0.0.1:%d" % alice.getsockname()[1]
        assert a.line() == f"welcome {alice_name}, 1 online"
        with connect(port) as bob:
            b = LineReader(bob)
            bob_name = "127.0.0.1:%d" % bob.getsockname()[1]
            assert b.line() == f"welcome {bob_name}, 2 online"
            assert a.line() == f"* {bob_name} joined"
            bob.sendall("你好, ".encode())
            bob.sendall(b"alice\nsecond\n")
            assert [a.line(), a.line()] == [f"{bob_name}: 你好, alice", f"{bob_name}: second"]
            alice.sendall(b"hi bob\n")
            assert b.line() == f"{alice_name}: hi bob"
        assert a.line() == f"* {bob_name} left"
    server.wait_for_line(r"left: end of stream \(0 online\)", stream="stdout")

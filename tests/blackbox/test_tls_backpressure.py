"""Black-box tests of backpressure across the TLS layer: bytes that wait for a
handshake that never comes are held inside the connection, count toward its
high-water mark, and are bounded by the handshake timeout — in `serve --mode
chat` and in `relay`, each with a well-behaved TLS client served beside the
clients that never start TLS. Memory is the server's resident set (VmRSS)
before and after; it is printed, and asserted only without a sanitizer, whose
own memory dominates."""
import hashlib
import socket
import threading
import time

import pytest

from conftest import DEFAULT_TIMEOUT, scaled
from hostile_util import RSS_BOUNDS_APPLY, rss_bytes
from serve_util import connect, recv_exact, start_serve, wait_log
from test_relay import RELAY_LISTENING_RE
from tls_util import make_cert, tls_connect

TIMEOUT = scaled(DEFAULT_TIMEOUT)
MIB = 1 << 20
# The server may grow by less than this while the attack runs.
RSS_GROWTH_BOUND = 16 * MIB

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls-backpressure"))


def check_rss_growth(pid: int, before: int, what: str) -> None:
    grown = rss_bytes(pid) - before
    print(f"{what}: RSS grew by {grown / MIB:.1f} MiB")
    if RSS_BOUNDS_APPLY:
        assert grown < RSS_GROWTH_BOUND, f"{what}: RSS grew by {grown / MIB:.1f} MiB"


def recv_line(sock: socket.socket, buffer: bytearray, timeout: float = TIMEOUT) -> bytes:
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(256 * 1024)
        assert chunk, f"closed after {len(buffer)} bytes of a line"
        buffer += chunk
    end = buffer.index(b"\n") + 1
    line = bytes(buffer[:end])
    del buffer[:end]
    return line


def test_chat_broadcasts_to_members_without_a_handshake_stay_bounded(tcpkit_process, cert):
    # The speaker's 20 lines of 1 MiB are a flood on purpose: flood control
    # (--chat-rate) would let one through every 51 s.
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--tls-cert", cert[0], "--tls-key", cert[1],
                               "--tls-handshake-timeout", "30", "--chat-rate", "0")
    before = rss_bytes(server.pid)
    # Three clients open TCP and never send a ClientHello; each is a chat
    # member whose lines can only wait for a handshake.
    silent = [connect(port) for _ in range(3)]
    wait_log(server, r"\(clients: 3\)")
    with tls_connect(port, cert[0]) as listener, tls_connect(port, cert[0]) as speaker:
        wait_log(server, r"\(clients: 5\)")
        buffered = bytearray()
        # The listener hears the speaker join first.
        assert b"joined (5 online)" in recv_line(listener, buffered)
        line = b"x" * (MIB - 64) + b"\n"
        # The listener reads each line before the next is sent: a member
        # that keeps up, beside three whose every line must wait.
        for n in range(20):
            speaker.sendall(line)
            while True:
                got = recv_line(listener, buffered, timeout=TIMEOUT * 3)
                if got.startswith(b"<"):
                    break
                assert got.startswith(b"* "), got[:80]  # a notice: someone left
            assert got.endswith(b"> " + line), f"line {n} arrived damaged"
        # The members who never finished a handshake were dropped as slow
        # readers once their held lines passed the high-water mark.
        wait_log(server, r"disconnect 127\.0\.0\.1:\d+: slow reader \(output over high-water mark\)")
        check_rss_growth(server.pid, before, "chat with 3 members that never start TLS")
    for sock in silent:
        sock.close()


def flood_upstream(total: int):
    """A server that sends `total` bytes to each client as soon as it connects."""
    listener = socket.create_server(("127.0.0.1", 0))
    pattern = hashlib.sha256(b"flood").digest() * 2048  # 64 KiB

    def serve_one(conn: socket.socket) -> None:
        with conn:
            try:
                left = total
                while left > 0:
                    conn.sendall(pattern[:min(left, len(pattern))])
                    left -= min(left, len(pattern))
            except OSError:
                pass  # the relay gave up on this pair

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener, pattern


def test_relay_holds_upstream_data_for_a_client_that_never_starts_tls(tcpkit_process, cert):
    total = 30 * MIB
    upstream, pattern = flood_upstream(total)
    relay = tcpkit_process("relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{upstream.getsockname()[1]}",
                           "--tls-cert", cert[0], "--tls-key", cert[1], "--tls-handshake-timeout", "2")
    port = int(relay.wait_for_line(RELAY_LISTENING_RE, stream="stdout").group("port"))
    before = rss_bytes(relay.pid)
    with connect(port) as silent:
        wait_log(relay, r"connect 127\.0\.0\.1:\d+ -> ")
        # A well-behaved TLS client beside it gets all 30 MiB, byte-exact.
        with tls_connect(port, cert[0]) as good:
            data = recv_exact(good, total, timeout=TIMEOUT * 6)
        expected = (pattern * (total // len(pattern) + 1))[:total]
        assert data == expected, "the TLS client's stream differs"
        check_rss_growth(relay.pid, before, "relay with a client that never starts TLS")
        # The handshake timeout ends the silent client's pair.
        wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: client: TLS handshake timeout", timeout=TIMEOUT * 2)
        silent.settimeout(TIMEOUT)
        assert silent.recv(1) == b"", "the relay did not close the client"
    upstream.close()

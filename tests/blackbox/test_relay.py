"""Black-box tests of `tcpkit relay`: a TCP forwarder that can inject faults.

Every test puts the relay between a real client (Python's socket module)
and a real server (`tcpkit serve`), as a user would. Every wait has a
timeout; timing assertions are lower bounds only (a delay or a rate limit
can make things slower, never faster), and generous.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time

import pytest

from conftest import DEFAULT_TIMEOUT, PeerServer, pick_free_port
from serve_util import (connect, find_line, peer_name, recv_exact, recv_line, recv_until_eof, start_serve,
                        wait_log)

RELAY_LISTENING_RE = r"listening on (?P<host>[^ ]+):(?P<port>\d+), forwarding to (?P<upstream>\S+)"


def start_relay(tcpkit_process, upstream_port: int, *args) -> tuple[object, int]:
    """Starts `tcpkit relay --listen 127.0.0.1:0 --to 127.0.0.1:UPSTREAM ARGS...`
    and returns the process and the port it listens on."""
    relay = tcpkit_process("relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{upstream_port}", *args)
    match = relay.wait_for_line(RELAY_LISTENING_RE, stream="stdout")
    assert match.group("upstream") == f"127.0.0.1:{upstream_port}"
    return relay, int(match.group("port"))


def echo_server(tcpkit_process, *args) -> tuple[object, int]:
    return start_serve(tcpkit_process, "--mode", "echo", *args)


class Sender:
    """Sends `data` from a background thread (so the test can read at the
    same time without deadlocking on full socket buffers), then optionally
    shuts down the write side. Errors are kept, not raised, for tests that
    expect the relay to cut the connection."""

    def __init__(self, sock: socket.socket, data: bytes, shutdown: bool = True):
        self.sock = sock
        self.data = data
        self.shutdown = shutdown
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        view = memoryview(self.data)
        try:
            while self.sent < len(view):
                self.sent += self.sock.send(view[self.sent:self.sent + 65536])
            if self.shutdown:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.error = e

    def join(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"sender still running after {timeout}s ({self.sent} bytes sent)"


def echo_round_trip(port: int, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Sends `data` through the relay to an echo server, shuts down the write
    side, and returns everything that came back before EOF."""
    with connect(port, timeout=timeout) as client:
        sender = Sender(client, data)
        got, how = recv_until_eof(client, timeout=timeout)
        sender.join(timeout)
        assert sender.error is None, f"send failed: {sender.error!r}"
        assert how is None, "expected an orderly EOF, got a reset"
        return got


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- plain forwarding --------------------------------------------------------


def test_forwards_one_mebibyte_byte_exact(tcpkit_process):
    _server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream)
    data = os.urandom(1 << 20)
    got = echo_round_trip(port, data)
    assert len(got) == len(data)
    assert sha(got) == sha(data)
    wait_log(relay, r"connect 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:%d" % upstream)
    wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: .*\(bytes up 1048576, down 1048576\)")


def test_half_close_keeps_the_other_direction_open(tcpkit_process):
    server, upstream = echo_server(tcpkit_process)
    _relay, port = start_relay(tcpkit_process, upstream)
    data = os.urandom(200_000)
    with connect(port) as client:
        client.sendall(data)
        # Our FIN goes first; the echo of everything must still come back.
        client.shutdown(socket.SHUT_WR)
        got = recv_exact(client, len(data))
        assert got == data
        rest, how = recv_until_eof(client)
        assert rest == b"" and how is None
        wait_log(server, r"disconnect 127\.0\.0\.1:\d+: peer closed")


def test_client_data_sent_before_upstream_answers_is_kept(tcpkit_process):
    # The relay delays its own connect until a client arrives, so the
    # client's first bytes (and even its FIN) race the upstream connect.
    _server, upstream = echo_server(tcpkit_process)
    _relay, port = start_relay(tcpkit_process, upstream)
    for _ in range(20):
        with connect(port) as client:
            client.sendall(b"early bird\n")
            client.shutdown(socket.SHUT_WR)
            got, how = recv_until_eof(client)
            assert (got, how) == (b"early bird\n", None)


def test_many_concurrent_connections_each_byte_exact(tcpkit_process):
    _server, upstream = echo_server(tcpkit_process, "--threads", "2")
    relay, port = start_relay(tcpkit_process, upstream, "--threads", "2", "--quiet")
    payloads = [os.urandom(64 * 1024 + i) for i in range(50)]
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = echo_round_trip(port, payloads[i], timeout=30)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "some clients never finished"
    assert not errors, errors[0]
    for i, payload in enumerate(payloads):
        assert sha(results[i]) == sha(payload), f"client {i} got different bytes"
    assert not any(" connect " in line for line in relay.stdout_lines), "--quiet still logged connections"


def wait_for_stall(sender: Sender, timeout: float = 30, quiet: float = 0.5) -> int:
    """Waits until `sender` has made no progress for `quiet` seconds (or has
    sent everything); returns how much it had sent by then."""
    last, still_since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sender.sent < len(sender.data):
        if sender.sent != last:
            last, still_since = sender.sent, time.monotonic()
        elif time.monotonic() - still_since > quiet:
            break
        time.sleep(0.05)
    return sender.sent


def test_slow_upstream_pauses_the_client_instead_of_buffering(tcpkit_process):
    # The upstream reads nothing at first, with a small receive buffer. The
    # client writes far more than the socket buffers on the way can hold
    # (the relay's own receive buffer can grow to tcp_rmem's maximum): with
    # backpressure it must stall, and once the upstream reads, every byte
    # must arrive, in order.
    total = 96 << 20
    data = os.urandom(1 << 20) * (total // (1 << 20))
    may_read = threading.Event()
    digest = {}

    def slow_reader(conn: socket.socket) -> None:
        assert may_read.wait(60)
        h = hashlib.sha256()
        received = 0
        while chunk := conn.recv(1 << 20):
            h.update(chunk)
            received += len(chunk)
        digest["sha"], digest["bytes"] = h.hexdigest(), received

    listener_rcvbuf = 64 * 1024
    with PeerServer(slow_reader, timeout=60) as upstream:
        upstream.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, listener_rcvbuf)
        relay, port = start_relay(tcpkit_process, upstream.port)
        with connect(port) as client:
            sender = Sender(client, data)
            sent = wait_for_stall(sender)
            may_read.set()
            assert sent < total, "the relay buffered everything the client sent"
            sender.join(60)
            assert sender.error is None
            recv_until_eof(client, timeout=60)
        upstream.wait(60)
    assert digest == {"sha": sha(data), "bytes": total}


def test_slow_client_still_gets_everything_after_the_upstream_closes(tcpkit_process):
    # The client reads nothing until the echo server has sent everything and
    # closed: the relay pauses the upstream while the client is slow, and the
    # upstream's FIN then waits behind unread data. Every byte and then the
    # EOF must still reach the client (regression: the hang-up was taken for
    # a reset and the rest dropped).
    _server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream)
    data = os.urandom(1 << 20) * 8
    with connect(port, rcvbuf=64 * 1024) as client:
        sender = Sender(client, data)
        sender.join(30)
        assert sender.error is None
        wait_log(_server, r"disconnect 127\.0\.0\.1:\d+: peer closed", timeout=30)
        got, how = recv_until_eof(client, timeout=30, limit=len(data))
    assert how is None
    assert len(got) == len(data) and sha(got) == sha(data)
    wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: closed by client \(bytes up %d, down %d\)" % (len(data), len(data)))


# ---- fault injection ---------------------------------------------------------


def test_chunk_one_byte_still_one_reply_per_line(tcpkit_process):
    server, upstream = start_serve(tcpkit_process, "--framing", "line", "--mode", "ack", "--reply", "ok")
    _relay, port = start_relay(tcpkit_process, upstream, "--chunk", "1")
    lines = [b"hello", b"tcp is a byte stream", "\u4f60\u597d".encode()]
    with connect(port) as client:
        client.sendall(b"".join(line + b"\n" for line in lines))
        buffer = bytearray()
        for _ in lines:
            assert recv_line(client, buffer) == b"ok"
    for line in lines:
        wait_log(server, r"message from 127\.0\.0\.1:\d+: %s$" % line.decode())


def test_delay_and_jitter_keep_order_and_every_byte(tcpkit_process):
    _server, upstream = echo_server(tcpkit_process)
    _relay, port = start_relay(tcpkit_process, upstream, "--delay", "20", "--jitter", "30")
    with connect(port, nodelay=True) as client:
        started = time.monotonic()
        client.sendall(b"ping")
        assert recv_exact(client, 4) == b"ping"
        # Both directions wait at least --delay.
        assert time.monotonic() - started >= 0.035
        # Many small writes, each delayed by its own random jitter: the
        # stream must come back whole and in order.
        messages = [b"%05d:" % i + os.urandom(i % 97) for i in range(300)]
        sender_data = b"".join(messages)
        for message in messages:
            client.sendall(message)
        assert recv_exact(client, len(sender_data), timeout=30) == sender_data


def test_chunk_with_delay_spaces_the_writes(tcpkit_process):
    _server, upstream = echo_server(tcpkit_process)
    _relay, port = start_relay(tcpkit_process, upstream, "--chunk", "4", "--delay", "10")
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(b"0123456789abcdef")  # 4 pieces, each 10 ms after the last
        assert recv_exact(client, 16) == b"0123456789abcdef"
        assert time.monotonic() - started >= 0.03


def test_rate_limits_throughput(tcpkit_process):
    _server, upstream = start_serve(tcpkit_process, "--mode", "discard")
    relay, port = start_relay(tcpkit_process, upstream, "--rate", "65536")
    data = os.urandom(64 * 1024)
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        # The discard server closes once it has read everything (our FIN
        # arrives after the data), so EOF means every byte went through.
        _got, how = recv_until_eof(client, timeout=30)
        elapsed = time.monotonic() - started
    assert how is None
    assert elapsed >= 0.5, f"64 KiB at 64 KiB/s took only {elapsed:.3f}s"
    wait_log(relay, r"\(bytes up 65536, down 0\)")


def test_reset_after_resets_both_sides(tcpkit_process):
    server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream, "--reset-after", "150")
    with connect(port) as client:
        client.sendall(os.urandom(100))  # 100 up, then the echo: the 150th byte trips it
        got, how = recv_until_eof(client)
        assert len(got) <= 50
        assert how in ("reset", None)
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: connection reset")
    wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: reset after 150 bytes \(--reset-after\) "
                    r"\(bytes up 100, down 50\)")
    # The server keeps serving, and the next pair counts from zero.
    with connect(port) as client:
        client.sendall(b"again")
        assert recv_exact(client, 5) == b"again"


def test_reset_after_reaches_a_client_that_only_writes(tcpkit_process):
    _server, upstream = start_serve(tcpkit_process, "--mode", "discard")
    _relay, port = start_relay(tcpkit_process, upstream, "--reset-after", "10000")
    with connect(port) as client:
        sender = Sender(client, os.urandom(1 << 20), shutdown=False)
        _got, how = recv_until_eof(client)
        sender.join()
        assert how == "reset" or isinstance(sender.error, (ConnectionResetError, BrokenPipeError))


def test_close_after_closes_cleanly(tcpkit_process):
    server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream, "--close-after", "200")
    payload = os.urandom(100)
    with connect(port) as client:
        client.sendall(payload)
        got, how = recv_until_eof(client)
        assert how is None, "--close-after must end with FIN, not RST"
        assert got == payload
    wait_log(relay, r"closed after 200 bytes \(--close-after\) \(bytes up 100, down 100\)")
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: peer closed")


def test_idle_timeout_ends_a_silent_pair_and_spares_a_busy_one(tcpkit_process):
    server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream, "--idle-timeout", "0.5")
    with connect(port) as silent, connect(port) as busy:
        silent_name = peer_name(silent)
        # The busy pair talks more often than the timeout, for longer than it.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            busy.sendall(b"ping")
            assert recv_exact(busy, 4) == b"ping"
            time.sleep(0.1)
        got, how = recv_until_eof(silent)
        assert got == b"" and how is None, "the silent client was not closed"
        wait_log(relay, rf"disconnect {silent_name}: client: idle timeout")
        busy.sendall(b"still here")
        assert recv_exact(busy, 10) == b"still here"
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: ")


@pytest.mark.parametrize("backend", ["epoll", "uring"])
def test_regression_a_download_is_not_idle_for_the_client_that_only_reads(tcpkit_process, backend):
    """On epoll, bytes the relay wrote to its client at once were not activity
    for --idle-timeout (on io_uring they were): a client that only read what
    the upstream pushed lost its pair after the timeout. The upstream pushes a
    line every 0.15 s for three times the timeout; then the pair falls silent
    and ends."""
    ticks = 10

    def push(conn):
        for k in range(ticks):
            conn.sendall(f"tick {k}\n".encode())
            time.sleep(0.15)
        conn.recv(1)  # until the relay ends the pair

    with PeerServer(push) as upstream:
        relay, port = start_relay(tcpkit_process, upstream.port, "--idle-timeout", "0.5",
                                  "--io-backend", backend)
        with connect(port) as reader:
            me = peer_name(reader)
            buffer = bytearray()
            for k in range(ticks):
                assert recv_line(reader, buffer) == f"tick {k}".encode()
            assert not find_line(relay, rf"disconnect {me}: .*idle timeout")
            got, _how = recv_until_eof(reader)
            assert got == b""
        wait_log(relay, rf"disconnect {me}: (client|upstream): idle timeout")


@pytest.mark.parametrize("backend", ["epoll", "uring"])
def test_regression_bytes_the_relay_holds_back_keep_the_pair_from_idling(tcpkit_process, backend):
    """Bytes that --delay or --rate hold inside the relay are on their way,
    yet neither side's socket moved meanwhile, and --idle-timeout ended the
    pair with them: a request delayed past the timeout was dropped, and a
    rate-limited upload was cut short with a clean FIN."""
    _server, upstream = echo_server(tcpkit_process)
    _relay, port = start_relay(tcpkit_process, upstream, "--idle-timeout", "0.3", "--delay", "800",
                               "--io-backend", backend)
    with connect(port) as client:
        client.sendall(b"ping\n")  # 0.8 s to the server, 0.8 s back
        assert recv_line(client, bytearray()) == b"ping"
    upload = bytes(range(256)) * 32  # 8 KiB at 4,000 B/s: two seconds
    _relay, port = start_relay(tcpkit_process, upstream, "--idle-timeout", "0.3", "--rate", "4000",
                               "--io-backend", backend)
    with connect(port) as client:
        client.sendall(upload)
        assert recv_exact(client, len(upload)) == upload


def test_regression_a_slow_download_keeps_its_pair_while_the_upstream_is_silent(tcpkit_process):
    """The upstream sends 6 MB at once and falls silent; the client reads
    about 1 MB/s. Once the relay had read the last of it, the upstream side
    looked idle and ended the pair, dropping the megabyte the relay still
    held for the client, which got a clean EOF at about 4.3 MB. A side is
    not idle while bytes it sent are on their way. (The relay's pair logic
    is the same on both backends: epoll only.)"""
    size = 6_000_000

    def push(conn):
        conn.sendall(b"D" * size)
        conn.recv(1)  # until the relay ends the pair

    with PeerServer(push) as upstream:
        relay, port = start_relay(tcpkit_process, upstream.port, "--idle-timeout", "0.5",
                                  "--io-backend", "epoll")
        with connect(port) as reader:
            got = 0
            while got < size:
                data = reader.recv(65536)
                assert data, f"the pair ended after {got} of {size} bytes: {relay.describe()}"
                got += len(data)
                time.sleep(0.0625)


def test_upstream_down_closes_the_client(tcpkit_process):
    dead = pick_free_port()
    relay, port = start_relay(tcpkit_process, dead)
    with connect(port) as client:
        me = peer_name(client)
        client.sendall(b"anyone there?")
        got, _how = recv_until_eof(client)
        assert got == b""
    line = wait_log(relay, r"disconnect %s: .*refused.*" % me).group(0)
    assert f"127.0.0.1:{dead}" in line
    assert relay.returncode is None, "the relay must keep running"


def test_max_conns_closes_extra_clients(tcpkit_process):
    _server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream, "--max-conns", "1")
    with connect(port) as first:
        first.sendall(b"one")
        assert recv_exact(first, 3) == b"one"
        with connect(port) as second:
            got, _how = recv_until_eof(second)
            assert got == b""
        wait_log(relay, r"too many connections")
        first.sendall(b"still")
        assert recv_exact(first, 5) == b"still"


# ---- the program ------------------------------------------------------------


def test_json_log_lines(tcpkit_process):
    _server, upstream = echo_server(tcpkit_process)
    relay = tcpkit_process("relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{upstream}",
                           "--log-format", "json")
    listening = json.loads(relay.wait_for_line(r'"event": ?"listening"', stream="stdout").string)
    port = int(listening["address"].rsplit(":", 1)[1])
    assert echo_round_trip(port, b"json please") == b"json please"
    line = relay.wait_for_line(r'"event": ?"disconnect"', stream="stdout").string
    event = json.loads(line)
    assert (event["bytes_up"], event["bytes_down"]) == (11, 11)
    assert event["upstream"] == f"127.0.0.1:{upstream}"


@pytest.mark.parametrize("args", [
    ["--listen", "127.0.0.1", "--to", "127.0.0.1:80"],
    ["--listen", "not an address:0", "--to", "127.0.0.1:80"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:0"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:99999"],
    ["--listen", "127.0.0.1:0"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", "--delay", "-5"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", "--rate", "-1"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", "--reset-after", "-1"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", "--chunk", "lots"],
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", "--log-format", "xml"],
    # Regression: an enum option took the enum's numbers too (1 was json).
    ["--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", "--log-format", "1"],
])
def test_usage_errors_exit_2(tcpkit, args):
    result = tcpkit("relay", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip()


@pytest.mark.parametrize("flag, value, says", [
    # Past 2^63 ns from now a deadline wrapped around: the delay vanished.
    ("--delay", "10000000000000", "10000000000000 is too large (give 0 to 1099511627776)"),
    ("--jitter", "99999999999999999999999", "is too large"),
    ("--chunk", "99999999999999999999999", "is too large"),
    ("--rate", "5ms", "'5ms' is not a whole number"),
    ("--delay", "abc", "'abc' is not a whole number"),
    ("--seed", "-1", "'-1' is not a whole number"),
    ("--max-conns", "20000000", "is too large (give 0 to 10000000)"),
    ("--idle-timeout", "nan", "'nan' is not a finite number"),
    ("--tls-handshake-timeout", "nan", "'nan' is not a finite number"),
])
def test_regression_numbers_out_of_reach_are_usage_errors_that_say_why(tcpkit, flag, value, says):
    result = tcpkit("relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:80", flag, value)
    assert result.returncode == 2, result.stderr
    assert f"{flag}: " in result.stderr and says in result.stderr, result.stderr


@pytest.mark.parametrize("listen, flags, says", [
    ("127.0.0.1:0", ["--unix-mode", "600"], "--unix-mode sets a Unix socket file's permissions"),
    ("unix:/tmp/tcpkit-relay-never.sock", ["--allow", "127.0.0.1"], "--allow/--deny judge IP addresses"),
], ids=["unix-mode-on-tcp", "allow-on-unix"])
def test_regression_listen_flags_that_cannot_apply_are_usage_errors(tcpkit, listen, flags, says):
    # Taken silently: --unix-mode did nothing, and --allow made a relay
    # that refused every client of its Unix socket.
    result = tcpkit("relay", "--listen", listen, "--to", "127.0.0.1:80", *flags)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr, result.stderr


def test_bind_failure_exits_1_with_a_clear_message(tcpkit):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = tcpkit("relay", "--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:80")
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "in use" in result.stderr
    assert f"tcpkit port {port}" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_gracefully(tcpkit_process, signum):
    _server, upstream = echo_server(tcpkit_process)
    relay, port = start_relay(tcpkit_process, upstream)
    with connect(port) as client:
        client.sendall(b"hi")
        assert recv_exact(client, 2) == b"hi"
        relay.signal(signum)
        _got, _how = recv_until_eof(client)
        assert relay.wait(timeout=DEFAULT_TIMEOUT) == 0
    assert any("stopped: relayed 1 connections" in line for line in relay.stdout_lines), relay.describe()


def test_help_mentions_every_fault(tcpkit):
    result = tcpkit("relay", "--help")
    assert result.returncode == 0
    for flag in ("--delay", "--jitter", "--rate", "--chunk", "--reset-after", "--close-after", "--max-conns"):
        assert flag in result.stdout

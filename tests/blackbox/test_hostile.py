"""Hostile clients and load against `tcpkit serve`, on loopback only.

Each test has a short form that runs under `make test` (well under 20 s on an
idle machine) and a longer one with SOAK=1 (`make soak`). Every load loop is
bounded by a count and by a deadline. docs/reliability.md records the runs.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import struct
import threading
import time

import pytest

from conftest import SANITIZER, tcpkit_path, wait_until
from hostile_util import (RSS_BOUNDS_APPLY, SOAK, cpu_seconds, loop_buffers_bound, push_until_stalled, describe_fds, echo_load, loopback_sources,
                          open_fds, raise_nofile, rss_bytes)
from serve_util import DEFAULT_REPLY, LISTENING_RE, ack_round_trip, connect, count_lines, frame, peer_name, \
    recv_exact, recv_frame, recv_line, recv_until_eof, start_serve, wait_log

MiB = 1 << 20
REPLY = DEFAULT_REPLY.encode()


def echo_check(sock: socket.socket, size: int, rng: random.Random, timeout: float = 10.0) -> None:
    """One byte-exact echo round trip of `size` random bytes (sha256)."""
    payload = rng.randbytes(size)
    sock.sendall(payload)
    got = recv_exact(sock, size, timeout)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()


# ---- clients that never read ------------------------------------------------

def test_never_reading_clients_cannot_grow_server_memory(tcpkit_process):
    """Clients push echo data and never read it: the server pauses reading
    from each at its high-water mark, so its memory stays near
    conns x (mark + one read), while another client is served byte-exact."""
    conns = 40 if SOAK else 8
    hwm = 64 * 1024
    read_cap = 256 * 1024  # ConnectionOptions::max_read_per_wakeup: one read past the mark
    server, port = start_serve(tcpkit_process, "--mode", "echo", "-q", "--high-water-mark", hwm)
    idle_fds = open_fds(server.pid)
    rng = random.Random(7)
    with connect(port) as probe:
        echo_check(probe, 1000, rng)  # warm-up: the loop's read buffer exists
        base_rss = rss_bytes(server.pid)

        hogs = []
        for _ in range(conns):
            s = connect(port, rcvbuf=4096)
            s.setblocking(False)
            hogs.append(s)
        cap = 256 * MiB  # the server must stop reading long before this
        pushed, in_time = push_until_stalled(hogs, cap, 120 if SOAK else 40)
        assert in_time, "the hogs could still send when the time ran out"
        assert max(pushed) < cap, f"the server kept reading: {max(pushed)} bytes from one hog"
        grown = rss_bytes(server.pid) - base_rss
        bound = conns * 2 * (hwm + read_cap) + 4 * MiB + loop_buffers_bound(conns + 1)
        print(f"never-readers: {conns} pushed {sum(pushed) / MiB:.1f} MiB "
              f"(min {min(pushed) / MiB:.1f}, max {max(pushed) / MiB:.1f} MiB each); server RSS grew "
              f"{grown / MiB:.1f} MiB (bound {bound / MiB:.1f} MiB)")
        if RSS_BOUNDS_APPLY:
            assert grown < bound, f"server RSS grew {grown} bytes with {conns} never-reading clients"

        # Another client is still served, byte-exact, while the hogs sit.
        for size in (1, 1000, 200_000):
            echo_check(probe, size, rng)
        for s in hogs:
            s.close()
    try:
        wait_until(lambda: open_fds(server.pid) == idle_fds, timeout=15, message="the hogs' descriptors to be closed")
    except TimeoutError as e:
        raise AssertionError(f"{e}: {open_fds(server.pid)} open, {idle_fds} before the clients came\n"
                             f"{describe_fds(server.pid)}") from None


# ---- slowloris ----------------------------------------------------------------

def test_slowloris_clients_are_freed_by_the_idle_timeout(tcpkit_process):
    """Silent clients are closed by --idle-timeout; clients that trickle a
    byte now and then are kept while they trickle (an idle timeout measures
    silence) and closed once they fall silent; a normal client is served
    throughout."""
    silent_count = 200 if SOAK else 40
    trickle_count = 50 if SOAK else 10
    idle = 2.0
    trickle_seconds = 20.0 if SOAK else 2 * idle + 1
    raise_nofile(4 * (silent_count + trickle_count) + 64)
    server, port = start_serve(tcpkit_process, "--idle-timeout", idle, "--framing", "line",
                               "--max-message", "4096")
    silent = [connect(port) for _ in range(silent_count)]
    tricklers = [connect(port) for _ in range(trickle_count)]
    with connect(port) as normal:
        buffer = bytearray()
        # One byte per trickler every 0.3 s, well inside the timeout; the
        # normal client gets its reply every round.
        end = time.monotonic() + trickle_seconds
        rounds = 0
        while time.monotonic() < end and rounds < 1000:
            for s in tricklers:
                s.sendall(b"z")
            normal.sendall(b"ping\n")
            assert recv_line(normal, buffer, timeout=10) == REPLY
            rounds += 1
            time.sleep(0.3)  # the trickle's pace, not synchronisation
        # Every trickler is still open: nothing to read, and no EOF.
        for s in tricklers:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
            s.setblocking(True)
        # The silent ones were closed, and the server said why.
        for s in silent:
            assert recv_until_eof(s, timeout=10)[0] == b""
        wait_until(lambda: count_lines(server, r": idle timeout \(clients: \d+\)$") >= silent_count,
                   timeout=10, message="an idle-timeout line per silent client")
        # Silence now: the tricklers are closed within the timeout, too.
        for s in tricklers:
            assert recv_until_eof(s, timeout=10)[0] == b""
        wait_until(lambda: count_lines(server, r": idle timeout \(clients: \d+\)$") >= silent_count + trickle_count,
                   timeout=10, message="an idle-timeout line per slow client")
    for s in silent + tricklers:
        s.close()
    assert server.returncode is None


# ---- floods past --max-conns ---------------------------------------------------

def test_flood_past_max_conns_is_refused_and_counted(tcpkit_process):
    limit = 20
    flood = 2000 if SOAK else 300
    raise_nofile(limit + 256)
    server, port = start_serve(tcpkit_process, "--mode", "echo", "--max-conns", limit)
    rng = random.Random(3)
    held = [connect(port) for _ in range(limit)]
    for s in held:
        echo_check(s, 100, rng)
    # Each extra client is accepted and closed at once: EOF, never a hang.
    refused = 0
    start = time.monotonic()
    for _ in range(flood):
        with connect(port) as extra:
            data, _how = recv_until_eof(extra, timeout=10)
            assert data == b""
            refused += 1
        assert time.monotonic() - start < 120, "the flood took too long"
    wait_until(lambda: count_lines(server, r"refused: too many connections \(clients: \d+\)$") == flood,
               timeout=15, message=f"{flood} refusal lines")
    assert count_lines(server, rf"refused: too many connections \(clients: {limit}\)$") == flood
    for s in held:
        echo_check(s, 5000, rng)  # service continued for those within the limit
    held.pop().close()
    wait_log(server, rf"disconnect .*: peer closed \(clients: {limit - 1}\)$")
    with connect(port) as newcomer:
        echo_check(newcomer, 3000, rng)
    for s in held:
        s.close()


# ---- descriptor exhaustion -------------------------------------------------------

@pytest.mark.skipif(SANITIZER == "address", reason=(
    "UBSan's vptr check probes memory through a pipe(); with every descriptor in use pipe() fails "
    "and it reports a false 'invalid vptr' on the first virtual call (std::error_category) and halts"))
def test_descriptor_exhaustion_does_not_spin(tcpkit_process):
    """With RLIMIT_NOFILE 64 and ~100 clients, accept() fails with EMFILE. The
    server must not busy-loop on its listener (CPU time over a 2 s window
    stays near zero) and must serve new clients once descriptors free up."""
    clients_wanted = 100
    server = tcpkit_process(argv=["prlimit", "--nofile=64", str(tcpkit_path()), "serve", "--port", "0",
                                  "--mode", "echo", "-q"])
    port = int(server.wait_for_line(LISTENING_RE, stream="stdout").group("port"))
    rng = random.Random(5)
    clients = []
    for _ in range(clients_wanted):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))  # completes in the kernel's accept queue
        clients.append(s)
    wait_until(lambda: open_fds(server.pid) >= 60, timeout=10, message="the server to run out of descriptors")
    cpu_before = cpu_seconds(server.pid)
    time.sleep(2.0)  # the measuring window itself
    cpu_used = cpu_seconds(server.pid) - cpu_before
    print(f"EMFILE: {open_fds(server.pid)} descriptors open, {cpu_used:.2f} s CPU in a 2 s window")
    assert cpu_used < 0.2, f"server used {cpu_used:.2f} s of CPU in 2 s while out of descriptors: spinning"
    # The clients it did accept are served normally.
    served = 0
    for s in clients[:20]:
        s.settimeout(0.5)
        try:
            s.sendall(b"are you there")
            if recv_exact(s, 13, timeout=0.5) == b"are you there":
                served += 1
        except (OSError, AssertionError):
            pass
    assert served >= 10, f"only {served} of the first 20 clients were served"
    for s in clients:
        s.close()
    wait_until(lambda: open_fds(server.pid) < 20, timeout=15, message="descriptors to be released")
    with connect(port) as newcomer:
        echo_check(newcomer, 10_000, rng)
    assert server.returncode is None


# ---- bad input closes only its own connection -----------------------------------

def test_oversize_length_frame_closes_only_that_connection(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "length", "--max-message", "1024")
    with connect(port) as good, connect(port) as bad:
        good.sendall(frame(b"before"))
        assert recv_frame(good) == REPLY
        bad.sendall(struct.pack(">I", 1 << 30) + b"x" * 100)  # announces 1 GiB
        recv_until_eof(bad, timeout=10)
        wait_log(server, rf"disconnect {peer_name(bad)}: message too large")
        good.sendall(frame(b"after"))
        assert recv_frame(good) == REPLY


def test_overlong_line_closes_only_that_connection(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "line", "--max-message", "1024")
    with connect(port) as good, connect(port) as bad:
        buffer = bytearray()
        bad.sendall(b"y" * 5000)  # no newline, over the limit
        recv_until_eof(bad, timeout=10)
        wait_log(server, rf"disconnect {peer_name(bad)}: message too large")
        good.sendall(b"fine\n")
        assert recv_line(good, buffer) == REPLY


def test_invalid_gbk_is_logged_escaped_and_the_connection_lives(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--encoding", "gbk", "--framing", "line")
    with connect(port) as client:
        buffer = bytearray()
        client.sendall("好".encode("gbk") + b" \xff\xff bad \x01\x1b end\n")
        line = recv_line(client, buffer)
        assert line == DEFAULT_REPLY.encode("gbk")  # the reply goes out in GBK too
        match = wait_log(server, rf"message from {peer_name(client)}: (.*)$")
        assert match.group(1) == r"好 \xFF\xFF bad \x01\x1b end", match.group(1)
        client.sendall("再見\n".encode("gbk"))
        assert recv_line(client, buffer) == line
        wait_log(server, rf"message from {peer_name(client)}: 再見$")


# ---- load: thousands of concurrent echo round trips ------------------------------

def test_thousands_of_concurrent_byte_exact_echoes(tcpkit_process):
    connections = 10_000 if SOAK else 2_000
    have = raise_nofile(connections + 512)
    if have < connections + 256:
        pytest.skip(f"RLIMIT_NOFILE hard limit {have} is too low for {connections} clients")
    server = tcpkit_process(argv=["prlimit", f"--nofile={connections + 256}", str(tcpkit_path()), "serve",
                                  "--port", "0", "--mode", "echo", "-q", "--threads", "2"])
    port = int(server.wait_for_line(LISTENING_RE, stream="stdout").group("port"))
    sources = loopback_sources(4) if SOAK else ["127.0.0.1"]
    result = echo_load(port, connections, 1, 64 * 1024 if SOAK else 16 * 1024,
                       timeout=300 if SOAK else 90, sources=sources, seed=11)
    print(f"load: {result.ok}/{connections} byte-exact, {result.mismatched} mismatched, "
          f"{len(result.failed)} failed, peak {result.peak_open} open at once, "
          f"{result.bytes_sent / MiB:.1f} MiB each way in {result.seconds:.1f} s")
    assert result.peak_open == connections, result.failed[:5]
    assert result.mismatched == 0
    assert result.failed == [], result.failed[:5]
    assert result.ok == connections
    assert result.bytes_received == result.bytes_sent
    assert server.returncode is None


# ---- soak: random sizes and random disconnects ----------------------------------

def test_random_sizes_and_disconnects_lose_nothing_and_memory_stays_flat(tcpkit_process):
    """Clients churn: random-size echo round trips, and now and then an abrupt
    disconnect (close with data in flight, or a reset). Every round trip on
    a connection that survives it is byte-exact, and the server's RSS after
    the run is within 20% of its RSS after a warm-up."""
    workers = 32 if SOAK else 8
    seconds = 120.0 if SOAK else 8.0
    raise_nofile(workers * 4 + 64)
    server, port = start_serve(tcpkit_process, "--mode", "echo", "-q", "--threads", "2")
    idle_fds = open_fds(server.pid)
    stats = {"rounds": 0, "bytes": 0, "lost": 0, "aborts": 0, "errors": []}
    lock = threading.Lock()

    def worker(seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        rounds = 0
        while time.monotonic() < stop_at and rounds < 1_000_000:
            try:
                with connect(port, timeout=10) as s:
                    while time.monotonic() < stop_at:
                        size = rng.choice((1, rng.randint(1, 512), rng.randint(512, 65536),
                                           rng.randint(65536, 512 * 1024)))
                        payload = rng.randbytes(size)
                        if rng.random() < 0.05:
                            # Abrupt end with data in flight: the server sees a reset
                            # or EOF mid-echo and must only drop this connection.
                            s.sendall(payload[: max(1, size // 2)])
                            if rng.random() < 0.5:
                                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            with lock:
                                stats["aborts"] += 1
                            break
                        s.sendall(payload)
                        got = recv_exact(s, size, timeout=15)
                        rounds += 1
                        with lock:
                            stats["rounds"] += 1
                            stats["bytes"] += size
                            if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
                                stats["lost"] += 1
            except (OSError, AssertionError) as e:
                with lock:
                    stats["errors"].append(repr(e))
                return

    def run_for(duration: float, first_seed: int) -> None:
        stop_at = time.monotonic() + duration
        threads = [threading.Thread(target=worker, args=(first_seed + i, stop_at), daemon=True)
                   for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(duration + 60)
        assert not any(t.is_alive() for t in threads), "a worker hung"

    run_for(seconds / 4, 100)  # warm-up: buffers, arenas and threads reach their working size
    warm_rss = rss_bytes(server.pid)
    run_for(seconds, 1000)
    wait_until(lambda: open_fds(server.pid) == idle_fds, timeout=15, message="the churned connections to close")
    end_rss = rss_bytes(server.pid)
    growth = (end_rss - warm_rss) / warm_rss
    print(f"churn: {stats['rounds']} round trips, {stats['bytes'] / MiB:.1f} MiB echoed, {stats['aborts']} "
          f"abrupt disconnects, {stats['lost']} lost; RSS {warm_rss / MiB:.1f} -> {end_rss / MiB:.1f} MiB "
          f"({growth * 100:+.1f}%)")
    assert stats["errors"] == [], stats["errors"][:5]
    assert stats["lost"] == 0
    assert stats["rounds"] > workers, "too little traffic to mean anything"
    if RSS_BOUNDS_APPLY:
        assert growth < 0.20, f"server RSS grew {growth * 100:.1f}% ({warm_rss} -> {end_rss} bytes)"
    assert server.returncode is None

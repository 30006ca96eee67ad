"""Helpers for the hostile-client and load tests (test_hostile.py): reading a
server's memory and CPU time from /proc, raising descriptor limits, and a
selectors-based echo load client that scales to thousands of connections in
one thread.

Every loop here is bounded by a count and by a deadline.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from conftest import SANITIZER, scaled

# Longer runs when SOAK=1 (`make soak`); the defaults keep `make test` quick.
SOAK = os.environ.get("SOAK") == "1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Linux: bind() to an address without picking a port yet, so the port is
# chosen at connect() and may be reused towards other destinations.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


# Under a sanitizer the server's resident memory is mostly the sanitizer's:
# shadow memory (TSan: several bytes per byte touched), ASan's quarantine of
# freed blocks (up to 256 MiB) and redzones. The RSS bounds are about the
# program's own buffers, so sanitizer builds print the figures but do not
# assert them; `make test` (no sanitizer) does.
RSS_BOUNDS_APPLY = not SANITIZER

# What an event loop of the io_uring backend may touch on its own, whatever
# the number of connections: its ring of provided receive buffers (128 of 16
# KiB, filled ahead of connections that pause) and its send buffers (16 KiB
# each, one per connection with a send on its way). A bound on a server's
# growth adds it once per loop; epoll loops hold no such buffers.
def loop_buffers_bound(connections: int) -> int:
    if os.environ.get("TCPKIT_IO_BACKEND") != "uring":
        return 0
    return 128 * 16 * 1024 + connections * 16 * 1024


def push_until_stalled(hogs: list[socket.socket], cap: int, limit_s: float) -> tuple[list[int], bool]:
    """Clients that never read: each non-blocking socket in `hogs` sends 64 KiB
    chunks until none could send anything for a whole second (the server
    stopped reading them and the kernel buffers filled), a socket stopping at
    `cap` bytes. Returns the bytes each pushed, and whether that ended within
    `limit_s` seconds."""
    pushed = [0] * len(hogs)
    chunk = b"x" * 65536
    sel = selectors.DefaultSelector()
    for i, s in enumerate(hogs):
        sel.register(s, selectors.EVENT_WRITE, i)
    last_progress = time.monotonic()
    deadline = last_progress + limit_s
    while time.monotonic() - last_progress < 1.0 and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            i = key.data
            if pushed[i] >= cap:
                continue
            try:
                pushed[i] += hogs[i].send(chunk)
                last_progress = time.monotonic()
            except BlockingIOError:
                pass
    sel.close()
    return pushed, time.monotonic() < deadline


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def describe_fds(pid: int) -> str:
    """What a process's descriptors point at, for a failure message."""
    lines = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            lines.append(f"{name} -> {os.readlink(f'/proc/{pid}/fd/{name}')}")
        except OSError:
            pass
    return "\n".join(lines)


def raise_nofile(wanted: int) -> int:
    """Raises this process's soft RLIMIT_NOFILE towards `wanted` (at most the
    hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def loopback_sources(count: int) -> list[str]:
    """127.0.0.1 .. 127.0.0.COUNT: each has its own ~28k ephemeral ports."""
    return [f"127.0.0.{i}" for i in range(1, count + 1)]


@dataclass
class EchoConn:
    """One client of the load run: sends `payload`, expects it back."""
    sock: socket.socket
    payload: bytes
    digest: bytes
    sent: int = 0
    received: bytearray = field(default_factory=bytearray)
    connected: bool = False
    done: bool = False
    error: Optional[str] = None


@dataclass
class LoadResult:
    ok: int = 0
    mismatched: int = 0
    failed: list = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    peak_open: int = 0
    seconds: float = 0.0


def echo_load(port: int, connections: int, min_size: int, max_size: int, timeout: float,
              sources: Optional[list[str]] = None, seed: int = 1, connect_batch: int = 256) -> LoadResult:
    """Opens `connections` clients to 127.0.0.1:port, all held open at once,
    then each sends a random payload of min_size..max_size bytes and reads
    the echo back; the echo must match byte for byte (sha256). Non-blocking,
    one selector, so thousands of connections fit one thread. Gives up when
    `timeout` seconds have passed; what did not finish is reported."""
    rng = random.Random(seed)
    sources = sources or ["127.0.0.1"]
    sel = selectors.DefaultSelector()
    result = LoadResult()
    timeout = scaled(timeout)
    start = time.monotonic()
    deadline = start + timeout
    conns: list[EchoConn] = []
    connecting = 0
    next_index = 0

    def open_one(i: int) -> None:
        nonlocal connecting
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((sources[i % len(sources)], 0))
        payload = rng.randbytes(rng.randint(min_size, max_size))
        conn = EchoConn(s, payload, hashlib.sha256(payload).digest())
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            conn.error = f"connect: {os.strerror(err)}"
            conn.done = True
            conns.append(conn)
            return
        conns.append(conn)
        connecting += 1
        sel.register(s, selectors.EVENT_WRITE, conn)

    # Phase 1: connect everybody, a batch in flight at a time, keeping all open.
    while (next_index < connections or connecting > 0) and time.monotonic() < deadline:
        while next_index < connections and connecting < connect_batch:
            open_one(next_index)
            next_index += 1
        for key, _ in sel.select(timeout=0.5):
            conn: EchoConn = key.data
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            connecting -= 1
            sel.unregister(conn.sock)
            if err:
                conn.error = f"connect: {os.strerror(err)}"
                conn.done = True
                conn.sock.close()
                continue
            conn.connected = True
    result.peak_open = sum(1 for c in conns if c.connected)

    # Phase 2: every connection sends its payload and reads the echo.
    pending = 0
    for conn in conns:
        if conn.connected:
            sel.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            pending += 1
    while pending > 0 and time.monotonic() < deadline:
        for key, events in sel.select(timeout=0.5):
            conn = key.data
            try:
                if events & selectors.EVENT_WRITE and conn.sent < len(conn.payload):
                    conn.sent += conn.sock.send(conn.payload[conn.sent:conn.sent + 65536])
                    if conn.sent == len(conn.payload):
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)
                if events & selectors.EVENT_READ:
                    chunk = conn.sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("EOF before the whole echo")
                    conn.received += chunk
            except BlockingIOError:
                continue
            except OSError as e:
                conn.error = str(e)
            if conn.error is None and len(conn.received) < len(conn.payload):
                continue
            sel.unregister(conn.sock)
            conn.sock.close()
            conn.done = True
            pending -= 1
    for conn in conns:
        result.bytes_sent += conn.sent
        result.bytes_received += len(conn.received)
        if not conn.done:
            conn.error = conn.error or f"unfinished after {timeout}s ({conn.sent} sent, {len(conn.received)} back)"
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
        if conn.error:
            result.failed.append(conn.error)
        elif hashlib.sha256(conn.received).digest() == conn.digest:
            result.ok += 1
        else:
            result.mismatched += 1
    sel.close()
    result.seconds = time.monotonic() - start
    return result

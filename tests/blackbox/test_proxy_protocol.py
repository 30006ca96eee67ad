"""`tcpkit serve --proxy-protocol --trusted-proxy CIDR`: serving behind a load
balancer that sends a PROXY protocol header (v1 text or v2 binary) before
the client's bytes.

Python plays the load balancer here: it connects from a trusted loopback
address and writes the header itself. The real client named in the header
replaces the peer everywhere (connect/message/disconnect lines, --allow and
--deny, chat names). A peer outside --trusted-proxy, a broken header, or one
that is not complete within --proxy-timeout closes that connection with a
reason in the log. test_haproxy.py does the same with a real HAProxy.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import struct
import tempfile
import time

import pytest

from conftest import run_tcpkit
from serve_util import (DEFAULT_REPLY, connect, find_line, peer_name, recv_exact, recv_line,
                        recv_until_eof, start_serve, wait_log)

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

REPLY = DEFAULT_REPLY.encode()
TRUST_LOCALHOST = ("--proxy-protocol", "--trusted-proxy", "127.0.0.1/32")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: str, source_port: int, destination: str = "127.0.0.1",
             destination_port: int = 8888) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {source_port} {destination_port}\r\n".encode()


def proxy_v2(source: str, source_port: int, destination: str = "127.0.0.1",
             destination_port: int = 8888, tlvs: tuple = ()) -> bytes:
    """A v2 PROXY header (command PROXY, TCP over IPv4/IPv6) with TLVs."""
    src = ipaddress.ip_address(source)
    dst = ipaddress.ip_address(destination)
    family = 0x21 if src.version == 6 else 0x11
    body = src.packed + dst.packed + struct.pack(">HH", source_port, destination_port)
    for kind, value in tlvs:
        body += struct.pack(">BH", kind, len(value)) + value
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack(">H", len(body)) + body


def proxy_v2_local() -> bytes:
    """What a balancer's health check sends: LOCAL, family UNSPEC, no addresses."""
    return V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])


def connect_from(source: str, port: int) -> socket.socket:
    """A client whose source address is `source` (any 127.0.0.0/8 address)."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(10)
    client.bind((source, 0))
    client.connect(("127.0.0.1", port))
    return client


def esc(text: str) -> str:
    return re.escape(text)


def assert_nothing_arrives(sock: socket.socket, wait: float = 0.3) -> None:
    """No reply yet (a negative check; the positive ones never rely on it)."""
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except socket.timeout:
        return
    raise AssertionError(f"expected nothing yet, got {data!r}")


# --------------------------------------------------------------------------
# Flags


@pytest.mark.parametrize("flags, needle", [
    (("--proxy-protocol",), "--trusted-proxy"),
    (("--trusted-proxy", "127.0.0.1/32"), "--proxy-protocol"),
    (("--proxy-protocol", "--trusted-proxy", "127.0.0.1/33"), "127.0.0.1/33"),
    (("--proxy-protocol", "--trusted-proxy", "not-a-net"), "not-a-net"),
    (("--proxy-protocol", "--trusted-proxy", "127.0.0.1", "--proxy-timeout", "0"), "--proxy-timeout"),
])
def test_proxy_flags_are_checked(flags, needle):
    result = run_tcpkit("serve", "--port", 0, *flags)
    assert result.returncode == 2, result
    assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("where, flags, needle", [
    ("unix:{dir}/s.sock", ("--trusted-proxy", "127.0.0.1/32"), "--trusted-proxy names IP networks"),
    ("unix:@tcpkit-proxy-test-{pid}", (), "abstract socket has no permissions"),
])
def test_proxy_flags_on_a_unix_socket_are_checked(where, flags, needle):
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        host = where.format(dir=short, pid=os.getpid())
        result = run_tcpkit("serve", "--host", host, "--proxy-protocol", *flags)
    assert result.returncode == 2, result
    assert needle in result.stderr, result.stderr


def test_regression_a_unix_socket_needs_no_trusted_proxy(tcpkit_process):
    """On a Unix socket file the proxy is whoever its permissions let connect:
    the header's client is served and judged by --allow. --proxy-protocol
    there used to demand --trusted-proxy, which no Unix peer can match."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        path = os.path.join(short, "s.sock")
        server = tcpkit_process("serve", "--unix", path, "--proxy-protocol", "--allow", "198.51.100.0/24")
        server.wait_for_line(r"listening on unix:", stream="stdout")
        for client, served in (("198.51.100.5", True), ("203.0.113.1", False)):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as proxy:
                proxy.settimeout(10)
                proxy.connect(path)
                proxy.sendall(proxy_v1(client, 5) + b"hello")
                if served:
                    assert recv_exact(proxy, len(REPLY)) == REPLY
                else:
                    assert recv_until_eof(proxy)[0] == b""
        wait_log(server, r"message from 198\.51\.100\.5:5: hello$")
        wait_log(server, r"disconnect 203\.0\.113\.1:5: refused: not allowed")
        assert find_line(server, r"untrusted") is None


def test_help_lists_the_proxy_flags():
    result = run_tcpkit("serve", "--help")
    assert result.returncode == 0
    for flag in ("--proxy-protocol", "--trusted-proxy", "--proxy-timeout"):
        assert flag in result.stdout, flag


# --------------------------------------------------------------------------
# The real client replaces the proxy's address


def test_v1_header_names_the_client_in_every_log_line(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect(port) as proxy:
        via = peer_name(proxy)
        proxy.sendall(proxy_v1("203.0.113.7", 4242, "127.0.0.1", port) + b"hello")
        assert recv_exact(proxy, len(REPLY)) == REPLY
        wait_log(server, rf"connect 203\.0\.113\.7:4242 via {esc(via)} \(clients: 1\)$")
        wait_log(server, r"message from 203\.0\.113\.7:4242: hello$")
    wait_log(server, r"disconnect 203\.0\.113\.7:4242: peer closed \(clients: 0\)$")
    assert find_line(server, rf"(connect|message from|disconnect) {esc(via)}") is None


def test_v2_header_with_tlvs_longer_than_107_bytes(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--framing", "line")
    header = proxy_v2("198.51.100.20", 6000, "127.0.0.1", port,
                      tlvs=((0x01, b"h2"), (0x02, b"chat.example.net"), (0x04, b"\0" * 200)))
    assert len(header) > 107
    with connect(port) as proxy:
        proxy.sendall(header + b"one\ntwo\n")
        buffer = bytearray()
        assert recv_line(proxy, buffer) == REPLY
        assert recv_line(proxy, buffer) == REPLY
    wait_log(server, r"message from 198\.51\.100\.20:6000: one$")
    wait_log(server, r"message from 198\.51\.100\.20:6000: two$")


def test_v1_tcp6_header_from_an_ipv4_proxy(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect(port) as proxy:
        proxy.sendall(proxy_v1("2001:db8::1", 5000, "2001:db8::2", 80) + b"hi")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    wait_log(server, r"message from \[2001:db8::1\]:5000: hi$")


def test_nothing_is_served_until_the_header_is_complete(tcpkit_process):
    """Echo mode would return any byte it took for data; the header arrives
    in pieces and only what follows it comes back."""
    server, port = start_serve(tcpkit_process, "--mode", "echo", *TRUST_LOCALHOST)
    header = proxy_v2("192.0.2.33", 1234, "127.0.0.1", port, tlvs=((0x05, b"id-1"),))
    with connect(port, nodelay=True) as proxy:
        for i in range(0, len(header) - 1, 7):
            proxy.sendall(header[i:min(i + 7, len(header) - 1)])
        assert_nothing_arrives(proxy)
        proxy.sendall(header[-1:] + b"payload")
        assert recv_exact(proxy, len(b"payload")) == b"payload"
    wait_log(server, r"connect 192\.0\.2\.33:1234 via ")


def test_bytes_after_the_header_in_the_same_read_are_served(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--framing", "line")
    with connect(port) as proxy:
        proxy.sendall(proxy_v1("192.0.2.1", 1) + b"a\nb\nc\n")
        buffer = bytearray()
        for _ in range(3):
            assert recv_line(proxy, buffer) == REPLY
    for text in ("a", "b", "c"):
        wait_log(server, rf"message from 192\.0\.2\.1:1: {text}$")


def test_local_header_keeps_the_connection_addresses(tcpkit_process):
    """A health check (v2 LOCAL) is the proxy speaking for itself."""
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect(port) as proxy:
        me = peer_name(proxy)
        proxy.sendall(proxy_v2_local() + b"ping")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    wait_log(server, rf"connect {esc(me)} \(clients: 1\)$")
    wait_log(server, rf"message from {esc(me)}: ping$")


def test_v1_unknown_keeps_the_connection_addresses(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect(port) as proxy:
        me = peer_name(proxy)
        proxy.sendall(b"PROXY UNKNOWN\r\nping")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    wait_log(server, rf"message from {esc(me)}: ping$")


def test_json_log_carries_client_and_proxy(tcpkit_process):
    server = tcpkit_process("serve", "--port", 0, *TRUST_LOCALHOST, "--log-format", "json")
    listening = server.wait_for_line(r'"event": ?"listening"', stream="stdout")
    port = int(json.loads(listening.string)["address"].rsplit(":", 1)[1])
    with connect(port) as proxy:
        via = peer_name(proxy)
        proxy.sendall(proxy_v1("203.0.113.9", 999) + b"x")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    wait_log(server, r'"event": ?"disconnect"')
    events = [json.loads(line) for line in server.stdout_lines if line.startswith("{")]
    connects = [e for e in events if e.get("event") == "connect"]
    assert connects and connects[0]["peer"] == "203.0.113.9:999" and connects[0]["via"] == via, connects


# --------------------------------------------------------------------------
# Refusals


def test_untrusted_peer_is_closed_even_with_a_valid_header(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect_from("127.0.0.2", port) as client:
        me = peer_name(client)
        try:
            client.sendall(proxy_v1("203.0.113.50", 1) + b"let me in")
        except OSError:
            pass
        data, _how = recv_until_eof(client)
        assert data == b""
    wait_log(server, rf"disconnect {esc(me)}: refused: untrusted proxy \(not in --trusted-proxy\) \(clients: 0\)$")
    assert find_line(server, r"203\.0\.113\.50") is None
    assert find_line(server, r"message from ") is None


@pytest.mark.parametrize("garbage, detail", [
    (b"GET / HTTP/1.0\r\n\r\n", "not a PROXY header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n", "bad source port"),
    (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 80\r\n", "bad source address"),
    (b"PROXY " + b"x" * 200, "107"),
    (V2_SIGNATURE + bytes([0x21, 0x11, 0x00, 0x04]) + b"abcd", "too short"),
    (b"\r\n\r\n\x00\r\nQUIz", "signature"),
])
def test_invalid_header_closes_with_a_reason(tcpkit_process, garbage, detail):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect(port) as proxy:
        me = peer_name(proxy)
        proxy.sendall(garbage + b"data")
        data, _how = recv_until_eof(proxy)
        assert data == b""
    match = wait_log(server, rf"disconnect {esc(me)}: bad PROXY header \((?P<why>.*)\) \(clients: 0\)$")
    assert detail in match.group("why")
    assert find_line(server, r"message from ") is None


def test_header_not_complete_in_time_closes_the_connection(tcpkit_process):
    """The default --proxy-timeout is 3 s, the spec's minimum."""
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST)
    with connect(port) as proxy:
        me = peer_name(proxy)
        proxy.sendall(b"PROXY TCP4 192.0.2.1 ")
        started = time.monotonic()
        data, _how = recv_until_eof(proxy, timeout=15)
        elapsed = time.monotonic() - started
    assert data == b""
    assert elapsed >= 2.9, f"closed after {elapsed:.2f}s, before the 3 s timeout"
    wait_log(server, rf"disconnect {esc(me)}: PROXY header timeout \(3 s\) \(clients: 0\)$")


def test_proxy_timeout_flag(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--proxy-timeout", "0.5")
    with connect(port) as proxy:
        me = peer_name(proxy)
        data, _how = recv_until_eof(proxy, timeout=10)
        assert data == b""
    wait_log(server, rf"disconnect {esc(me)}: PROXY header timeout \(0\.5 s\)")


def test_a_completed_header_stops_the_timer(tcpkit_process):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--proxy-timeout", "0.5")
    with connect(port) as proxy:
        proxy.sendall(proxy_v1("192.0.2.8", 8))
        # Past the timeout, the connection still serves.
        assert_nothing_arrives(proxy, wait=1.0)
        proxy.sendall(b"still here")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    assert find_line(server, r"PROXY header timeout") is None


def test_access_rules_apply_to_the_real_client(tcpkit_process):
    """--allow names clients, not the proxy: the proxy (127.0.0.1) is not in
    the allowed network, yet its clients from that network are served, and
    the others are refused after their header."""
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--allow", "198.51.100.0/24",
                               "--deny", "198.51.100.66")
    with connect(port) as proxy:
        proxy.sendall(proxy_v1("198.51.100.5", 5) + b"ok?")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    for refused in ("203.0.113.1", "198.51.100.66"):
        with connect(port) as proxy:
            proxy.sendall(proxy_v1(refused, 7) + b"ok?")
            data, _how = recv_until_eof(proxy)
            assert data == b""
        wait_log(server, rf"disconnect {esc(refused)}:7: refused: not allowed \(clients: \d+\)$")
    wait_log(server, r"message from 198\.51\.100\.5:5: ok\?$")
    assert find_line(server, r"message from (203\.0\.113\.1|198\.51\.100\.66):") is None
    # The proxy's own health checks (LOCAL) are not judged by --allow.
    with connect(port) as proxy:
        proxy.sendall(proxy_v2_local() + b"ping")
        assert recv_exact(proxy, len(REPLY)) == REPLY


def test_chat_names_are_the_real_clients(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "chat", *TRUST_LOCALHOST)
    alice = connect(port)
    bob = connect(port)
    try:
        a_buf, b_buf = bytearray(), bytearray()
        alice.sendall(proxy_v1("192.0.2.10", 1010))
        wait_log(server, r"connect 192\.0\.2\.10:1010 via ")
        bob.sendall(proxy_v1("192.0.2.20", 2020) + b"hi all\n")
        assert recv_line(alice, a_buf) == b"* 192.0.2.20:2020 joined (2 online)"
        assert recv_line(alice, a_buf) == b"<192.0.2.20:2020> hi all"
        alice.sendall(b"hello bob\n")
        assert recv_line(bob, b_buf) == b"<192.0.2.10:1010> hello bob"
    finally:
        bob.close()
    assert recv_line(alice, a_buf) == b"* 192.0.2.20:2020 left"
    alice.close()


def test_regression_a_health_check_is_no_chat_member(tcpkit_process):
    # The documented HAProxy check (LOCAL, "ping", expect any reply) got no
    # reply in an empty room, so the instance was marked down, and members
    # saw it join, speak and leave every 2 s.
    server, port = start_serve(tcpkit_process, "--mode", "chat", *TRUST_LOCALHOST)
    with connect(port) as check:
        check.sendall(proxy_v2_local() + b"ping\n")
        assert recv_line(check, bytearray()) == b"* ok"
    alice = connect(port)
    a_buf = bytearray()
    try:
        alice.sendall(proxy_v1("192.0.2.10", 1010))
        wait_log(server, r"connect 192\.0\.2\.10:1010 via ")
        with connect(port) as check:
            check.sendall(proxy_v2_local() + b"ping\n")
            assert recv_line(check, bytearray()) == b"* ok"
        bob = connect(port)
        with bob:
            bob.sendall(proxy_v1("192.0.2.20", 2020) + b"hi\n")
            # The first thing alice hears is bob: nothing of the check.
            assert recv_line(alice, a_buf) == b"* 192.0.2.20:2020 joined (2 online)"
            assert recv_line(alice, a_buf) == b"<192.0.2.20:2020> hi"
    finally:
        alice.close()


def test_a_health_check_is_not_held_to_the_chat_rate(tcpkit_process):
    """Flood control paces members, not the balancer: a health check that
    sends 100 pings at once, at --chat-rate 1, gets its 100 answers at once,
    where a member's 100th line would wait 99 seconds."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--chat-rate", "1",
                               *TRUST_LOCALHOST)
    with connect(port) as check:
        check.sendall(proxy_v2_local() + b"ping\n" * 100)
        # One deadline for all of them (recv_exact), far below the 99 s.
        assert recv_exact(check, 5 * 100, timeout=10) == b"* ok\n" * 100


def test_many_proxied_clients_on_threads(tcpkit_process):
    """Headers and timers on several I/O loops at once."""
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--threads", "3", "--framing", "line")
    sockets = [connect(port) for _ in range(24)]
    try:
        for i, s in enumerate(sockets):
            s.sendall(proxy_v2(f"10.0.{i}.1", 1000 + i, "127.0.0.1", port) + f"m{i}\n".encode())
        for s in sockets:
            assert recv_line(s, bytearray()) == REPLY
    finally:
        for s in sockets:
            s.close()
    for i in range(24):
        wait_log(server, rf"message from 10\.0\.{i}\.1:{1000 + i}: m{i}$")


# --- headers that name no client --------------------------------------------------------------

def proxy_v2_no_client(family: int, body: bytes = b"") -> bytes:
    """A v2 PROXY (not LOCAL) header whose family names no TCP client."""
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack(">H", len(body)) + body


UNIX_BODY = b"/run/client.sock".ljust(108, b"\x00") + b"/run/server.sock".ljust(108, b"\x00")
NO_CLIENT_HEADERS = {
    "v1 UNKNOWN": b"PROXY UNKNOWN\r\n",
    "v2 UNSPEC": proxy_v2_no_client(0x00),
    "v2 UNIX": proxy_v2_no_client(0x31, UNIX_BODY),
}  # the fourth kind, v2 LOCAL, is the proxy's own health check: see below


@pytest.mark.parametrize("kind", NO_CLIENT_HEADERS)
def test_a_header_naming_no_client_is_judged_by_the_proxy_address(tcpkit_process, kind):
    """Regression: UNKNOWN, UNSPEC and UNIX headers skipped --allow/--deny, so
    a denied client got in through a proxy that sent one. The rules now judge
    the one address known, the proxy's own."""
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--deny", "127.0.0.1")
    with connect(port) as proxy:
        me = peer_name(proxy)
        proxy.sendall(NO_CLIENT_HEADERS[kind] + b"let me in")
        data, _how = recv_until_eof(proxy)
        assert data == b""
    wait_log(server, rf"disconnect {esc(me)}: refused: not allowed \(clients: \d+\)$")
    assert find_line(server, r"message from ") is None


@pytest.mark.parametrize("kind", NO_CLIENT_HEADERS)
def test_a_header_naming_no_client_from_an_allowed_proxy_is_served(tcpkit_process, kind):
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--allow", "127.0.0.1/32")
    with connect(port) as proxy:
        me = peer_name(proxy)
        proxy.sendall(NO_CLIENT_HEADERS[kind] + b"hello")
        assert recv_exact(proxy, len(REPLY)) == REPLY
    wait_log(server, rf"message from {esc(me)}: hello$")


def test_a_local_health_check_is_not_judged_by_the_rules(tcpkit_process):
    """LOCAL is the proxy's own health check: --trusted-proxy admits it."""
    server, port = start_serve(tcpkit_process, *TRUST_LOCALHOST, "--deny", "127.0.0.1")
    with connect(port) as proxy:
        proxy.sendall(proxy_v2_local() + b"ping")
        assert recv_exact(proxy, len(REPLY)) == REPLY

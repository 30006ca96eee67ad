"""`tcpkit serve --allow CIDR --deny CIDR`: ncat's access control.

A refused client is closed at once, before the server reads or writes a
byte, and the log says so: `disconnect PEER: refused: not allowed
(clients: N)`. Clients come from 127.0.0.1 and 127.0.0.2 (the client socket
is bound to its source address before connect); both are loopback.
"""

from __future__ import annotations

import socket

import pytest

from conftest import ipv6_loopback_available
from serve_util import DEFAULT_REPLY, ack_round_trip, connect, find_line, peer_name, recv_exact, \
    recv_until_eof, start_serve, wait_log

REPLY = DEFAULT_REPLY.encode()


def connect_from(source: str, port: int, host: str = "127.0.0.1") -> socket.socket:
    """A client whose source address is `source` (a 127.0.0.0/8 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(10)
    client.bind((source, 0))
    client.connect((host, port))
    return client


def assert_refused(server, client: socket.socket) -> None:
    """The server closed `client` without a byte and logged the refusal."""
    peer = peer_name(client)
    try:
        client.sendall(b"hello?\n")  # may land in the kernel before the close
    except OSError:
        pass
    data, _how = recv_until_eof(client, timeout=10)
    assert data == b""
    wait_log(server, rf"disconnect {peer}: refused: not allowed \(clients: \d+\)$")
    assert find_line(server, rf"connect {peer} ") is None
    assert find_line(server, rf"message from {peer}:") is None


def test_allow_serves_only_matching_clients(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--allow", "127.0.0.1")
    with connect_from("127.0.0.2", port) as stranger:
        assert_refused(server, stranger)
    with connect_from("127.0.0.1", port) as friend:
        ack_round_trip(friend, b"let me in", REPLY)
        wait_log(server, rf"message from {peer_name(friend)}: let me in")


def test_refusal_line_counts_the_clients_still_served(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--allow", "127.0.0.1/32")
    with connect_from("127.0.0.1", port) as friend:
        ack_round_trip(friend, b"hi", REPLY)
        with connect_from("127.0.0.2", port) as stranger:
            peer = peer_name(stranger)
            assert recv_until_eof(stranger)[0] == b""
            wait_log(server, rf"disconnect {peer}: refused: not allowed \(clients: 1\)$")
        ack_round_trip(friend, b"still here", REPLY)


def test_deny_refuses_only_its_matches(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--deny", "127.0.0.2")
    with connect_from("127.0.0.2", port) as denied:
        assert_refused(server, denied)
    with connect_from("127.0.0.3", port) as other:
        ack_round_trip(other, b"not denied", REPLY)


def test_deny_wins_over_allow_and_rules_repeat(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--allow", "127.0.0.0/8", "--deny", "127.0.0.2",
                               "--deny", "127.0.0.5/32")
    for source in ("127.0.0.2", "127.0.0.5"):
        with connect_from(source, port) as denied:
            assert_refused(server, denied)
    for source in ("127.0.0.1", "127.0.0.9"):
        with connect_from(source, port) as allowed:
            ack_round_trip(allowed, b"ok", REPLY)


def test_comma_separated_rules(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--allow", "127.0.0.3,127.0.0.4")
    with connect_from("127.0.0.4", port) as allowed:
        ack_round_trip(allowed, b"listed", REPLY)
    with connect_from("127.0.0.1", port) as stranger:
        assert_refused(server, stranger)


def test_refusals_do_not_count_as_clients(tcpkit_process):
    # --max-conns 1: a refused stranger must not take the one free slot.
    server, port = start_serve(tcpkit_process, "--allow", "127.0.0.1", "--max-conns", "1")
    for _ in range(5):
        with connect_from("127.0.0.2", port) as stranger:
            assert recv_until_eof(stranger)[0] == b""
    with connect_from("127.0.0.1", port) as friend:
        ack_round_trip(friend, b"my slot", REPLY)
    assert find_line(server, r"refused: too many connections") is None


@pytest.mark.skipif(not ipv6_loopback_available(), reason="IPv6 loopback unavailable")
def test_ipv6_rules(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--host", "::1", "--allow", "::1/128")
    with connect_from("::1", port, host="::1") as friend:
        ack_round_trip(friend, b"v6", REPLY)
    server2, port2 = start_serve(tcpkit_process, "--host", "::1", "--deny", "::1")
    with connect_from("::1", port2, host="::1") as denied:
        assert recv_until_eof(denied)[0] == b""
    wait_log(server2, r"disconnect \[::1\]:\d+: refused: not allowed")


@pytest.mark.parametrize("flag,text", [("--allow", "10.0.0.0/33"), ("--allow", "10.0.0/8"),
                                       ("--deny", "localhost"), ("--deny", "::1/129"),
                                       ("--allow", "127.0.0.1,nonsense"),
                                       ("--allow", "10.0.0.0/-0"), ("--deny", "::/-0")])
def test_bad_cidr_is_a_usage_error_naming_the_text(tcpkit, flag, text):
    result = tcpkit("serve", "--port", "0", flag, text)
    assert result.returncode == 2, result
    bad = text.split(",")[-1]
    assert f"'{bad}'" in result.stderr, result.stderr
    assert "CIDR" in result.stderr, result.stderr
    assert "listening" not in result.stdout


# --- the same flags on `tcpkit relay` --------------------------------------------------------

def test_relay_forwards_only_allowed_clients(tcpkit_process):
    upstream, upstream_port = start_serve(tcpkit_process, "--mode", "echo")
    relay = tcpkit_process("relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{upstream_port}",
                           "--allow", "127.0.0.0/30", "--deny", "127.0.0.2")
    port = int(relay.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)", stream="stdout").group(1))
    with connect_from("127.0.0.2", port) as denied, connect_from("127.0.0.5", port) as outside:
        for stranger in (denied, outside):
            peer = peer_name(stranger)
            data, _how = recv_until_eof(stranger, timeout=10)
            assert data == b""
            wait_log(relay, rf"disconnect {peer}: refused: not allowed$")
    with connect_from("127.0.0.1", port) as friend:
        friend.sendall(b"through")
        assert recv_exact(friend, 7) == b"through"
    # The upstream saw only the one allowed client.
    wait_log(upstream, r"disconnect .*\(clients: 0\)")
    assert sum(1 for line in upstream.stdout_lines if " connect " in f" {line}") == 1


def test_relay_bad_cidr_is_a_usage_error(tcpkit):
    result = tcpkit("relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--deny", "10.0.0.0/33")
    assert result.returncode == 2
    assert "10.0.0.0/33" in result.stderr

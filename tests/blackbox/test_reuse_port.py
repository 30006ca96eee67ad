"""Scaling out on one host: several `tcpkit serve --reuse-port` processes on
one port (SO_REUSEPORT). The kernel hashes each new connection to one of the
listening sockets, so every process serves a share, and each connection is
served (and logged) by exactly one of them.
"""

from __future__ import annotations

import signal

import pytest

from conftest import wait_until
from serve_util import DEFAULT_REPLY, ack_round_trip, connect, count_lines, peer_name, start_serve

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

REPLY = DEFAULT_REPLY.encode()
CONNECTIONS = 64


def test_connections_spread_over_two_processes(tcpkit_process):
    first, port = start_serve(tcpkit_process, "--reuse-port")
    second, second_port = start_serve(tcpkit_process, "--reuse-port", port=port)
    assert second_port == port
    peers = []
    for i in range(CONNECTIONS):
        with connect(port) as client:
            peers.append(peer_name(client))
            ack_round_trip(client, f"n{i}".encode(), REPLY)

    def served_by(server, peer: str, i: int) -> int:
        return count_lines(server, rf"message from {peer}: n{i}$")

    # Each connection shows up in exactly one log (ports may repeat across
    # connections, so the message text identifies the connection too).
    for i, peer in enumerate(peers):
        wait_until(lambda: served_by(first, peer, i) + served_by(second, peer, i) >= 1,
                   message=f"connection {i} ({peer}) in a log")
        assert served_by(first, peer, i) + served_by(second, peer, i) == 1
    on_first = count_lines(first, r"message from .*: n\d+$")
    on_second = count_lines(second, r"message from .*: n\d+$")
    assert on_first + on_second == CONNECTIONS
    # With 64 hashed connections, one side getting none has odds of 2^-63.
    assert on_first > 0 and on_second > 0, (on_first, on_second)


def test_one_process_stopping_leaves_the_other_serving(tcpkit_process):
    first, port = start_serve(tcpkit_process, "--reuse-port")
    second, _ = start_serve(tcpkit_process, "--reuse-port", port=port)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    for i in range(16):
        with connect(port) as client:
            ack_round_trip(client, f"after{i}".encode(), REPLY)
    wait_until(lambda: count_lines(second, r"message from .*: after\d+$") == 16,
               message="all 16 connections on the remaining process")

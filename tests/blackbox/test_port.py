"""Black-box tests of `tcpkit port PORT`: service names, listeners with their
owning process, and connection states, checked against real sockets made
with Python's socket module (like the tutorial's server)."""

import json
import os
import random
import socket
from pathlib import Path

import pytest

from conftest import ipv6_loopback_available, pick_free_port, run_tcpkit, wait_until

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


def own_process_name() -> str:
    return Path("/proc/self/comm").read_text().strip()


def port_json(port: int) -> dict:
    result = run_tcpkit("port", port, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def port_text(port: int) -> str:
    result = run_tcpkit("port", port)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_states(port: int, expected: dict) -> dict:
    """Waits until the port's state counts include `expected` (the kernel
    finishes a close a moment after the system call returns)."""
    def matches():
        states = port_json(port)["states"]
        return states if all(states.get(k, 0) == v for k, v in expected.items()) else None
    return wait_until(matches, timeout=10, message=f"states {expected} on port {port}")


@pytest.fixture
def listener():
    """A listening socket on a loopback port, as in the tutorial:
    socket -> bind -> listen. The port lies below the kernel's ephemeral range
    (ip_local_port_range), so that no other test's client connection, made
    while this one counts connections on the port, can have it as its own end."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        try:
            server.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    else:
        server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server, server.getsockname()[1]
    server.close()


def test_json_names_the_listening_process(listener):
    _, port = listener
    facts = port_json(port)
    assert facts["port"] == port
    assert facts["listening"] is True
    assert facts["listeners"] == [{
        "address": f"127.0.0.1:{port}",
        "inode": facts["listeners"][0]["inode"],
        "pid": os.getpid(),
        "process": own_process_name(),
    }]
    assert facts["listeners"][0]["inode"] > 0


def test_text_names_the_listening_process(listener):
    _, port = listener
    text = port_text(port)
    assert "LISTEN" in text
    assert f"127.0.0.1:{port}" in text
    assert f"pid {os.getpid()} ({own_process_name()})" in text
    assert "nobody is listening" not in text


@pytest.mark.skipif(not ipv6_loopback_available(), reason="IPv6 loopback is not available")
def test_ipv6_listener_is_bracketed():
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
        server.bind(("::1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        addresses = [entry["address"] for entry in port_json(port)["listeners"]]
        assert addresses == [f"[::1]:{port}"]


def test_established_connection_counts_both_ends(listener):
    server, port = listener
    with socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = server.accept()
        with accepted:
            wait_for_states(port, {"ESTABLISHED": 2})
            assert "ESTABLISHED  2" in port_text(port)


def test_server_closing_first_leaves_close_wait_then_time_wait(listener):
    server, port = listener
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: the tutorial's restart scenario

    # The client has seen the FIN (recv() returns 0 bytes) but not closed yet.
    client.settimeout(10)
    assert client.recv(1) == b""
    wait_for_states(port, {"CLOSE_WAIT": 1, "FIN_WAIT2": 1})
    assert "the local program has not called close()" in port_text(port)

    client.close()
    states = wait_for_states(port, {"TIME_WAIT": 1, "CLOSE_WAIT": 0, "ESTABLISHED": 0})
    assert "TIME_WAIT" in states
    text = port_text(port)
    assert "TIME_WAIT    1" in text
    assert "SO_REUSEADDR" in text
    assert "Address already in use" in text


@pytest.mark.parametrize("port, service", [(22, "ssh"), (80, "http"), (443, "https")])
def test_well_known_service_names(port, service):
    text = port_text(port)
    assert f"service:   {service}" in text
    assert "well-known" in text
    assert port_json(port)["service"] == service


def test_port_ranges():
    assert port_json(80)["range"] == "well-known"
    assert port_json(8080)["range"] == "registered"
    assert port_json(50000)["range"] == "dynamic"


def test_ephemeral_range_follows_the_kernel():
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert port_json(low)["ephemeral"] is True
    assert port_json(high)["ephemeral"] is True
    assert port_json(low - 1)["ephemeral"] is False
    assert port_json(low)["ephemeral_range"] == [low, high]
    assert "ip_local_port_range" in port_text(low)


def test_nobody_listening_exits_zero():
    port = pick_free_port()
    result = run_tcpkit("port", port)
    assert result.returncode == 0, result.stderr
    assert f"nobody is listening on port {port}" in result.stdout
    facts = port_json(port)
    assert facts["listening"] is False
    assert facts["listeners"] == []


@pytest.mark.parametrize("bad", ["70000", "65536", "abc", "8080x", ""])
def test_invalid_port_is_a_usage_error(bad):
    result = run_tcpkit("port", bad)
    assert result.returncode == 2
    assert "0 to 65535" in result.stderr
    assert result.stdout == ""


def test_missing_port_is_a_usage_error():
    result = run_tcpkit("port")
    assert result.returncode == 2
    assert "PORT" in result.stderr

"""Black-box tests of `tcpkit bench` against `tcpkit serve`, with several
client threads (one event loop each) against a server with several I/O
threads. Short runs (1 s of measuring): they check that the load generator
works and that its figures add up, not how fast anything is."""

from __future__ import annotations

import json

import pytest

from conftest import pick_free_port, run_tcpkit
from serve_util import start_serve

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


def bench(port: int, *args) -> dict:
    result = run_tcpkit("bench", "127.0.0.1", port, "--duration", "1", "--format", "json", *args, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["errors"]["mismatched_bytes"] == 0 and report["errors"]["lost_bytes"] == 0, report
    return report


def test_pingpong_threads_against_a_threaded_echo_server(tcpkit_process):
    _server, port = start_serve(tcpkit_process, "--mode", "echo", "-q", "--threads", "2")
    report = bench(port, "--mode", "pingpong", "--threads", "3", "--conns", "6", "--size", "1000")
    assert (report["mode"], report["threads"], report["conns"]) == ("pingpong", 3, 6)
    assert report["connected_at_start"] == 6
    assert report["messages"] > 0
    assert report["bytes"] == report["messages"] * 1000
    assert report["errors"]["reset"] == 0 and report["errors"]["refused"] == 0


def test_stream_threads_into_a_discard_server(tcpkit_process):
    _server, port = start_serve(tcpkit_process, "--mode", "discard", "-q", "--threads", "2")
    report = bench(port, "--mode", "stream", "--threads", "2", "--conns", "4", "--size", "4096")
    assert report["connected_at_start"] == 4
    assert report["bytes"] > 0


def test_connrate_threads(tcpkit_process):
    _server, port = start_serve(tcpkit_process, "--mode", "echo", "-q", "--threads", "2")
    report = bench(port, "--mode", "connrate", "--threads", "2", "--conns", "4")
    assert report["messages"] > 0
    assert report["connections"] >= report["messages"]
    assert report["errors"]["connect_failed"] == 0


def test_no_server_exits_1_and_says_so():
    port = pick_free_port()
    result = run_tcpkit("bench", "127.0.0.1", port, "--duration", "1", "--threads", "2", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no connection to 127.0.0.1:" in result.stderr and "succeeded" in result.stderr

"""Black-box tests of `tcpkit bench`: the load generator.

Every test runs the program against a real server: `tcpkit serve` in echo
or discard mode (plain or TLS), or a Python PeerServer that misbehaves on
purpose (corrupts a byte, sends bytes nobody asked for, holds replies back
and sends them in bursts, closes mid-run), and reads the JSON report
(`--format json --output FILE`) or the text report.

Runs are short (0.5 s). Nothing here asserts a throughput or latency figure
beyond "more than zero" and the ordering of the percentiles, and the one
rate check (--rate) is an upper bound, generous: a slow machine makes fewer
messages, never more.
"""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (SANITIZER, PeerServer, pick_free_port, private_hosts_file_works, run_tcpkit,
                      scaled, tcpkit_path, user_threads)
from serve_util import recv_exact, start_serve
from tls_util import make_cert

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

DURATION = "0.5"
# A whole run: connect phase + DURATION + teardown, with room for a busy machine.
RUN_TIMEOUT = 30

REPORT_FIELDS = {"mode", "conns", "size", "threads", "threads_requested", "rate", "missed_sends", "duration_s",
                 "messages", "bytes", "mib_per_s", "msgs_per_s", "connections", "connections_per_s",
                 "connected_at_start", "latency_us", "errors", "first_mismatch", "connect_error", "close_error",
                 "unanswered", "oldest_unanswered_us", "interrupted",
                 "tls", "busy_poll_us", "busy_poll_idle_s", "host", "kernel", "compiler", "args"}
ERROR_FIELDS = {"mismatched_bytes", "lost_bytes", "refused", "reset", "connect_failed", "tls_failed"}
PERCENTILES = ("p50", "p90", "p99", "p999", "max")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls-bench"))


def bench(port: int, *args, host: str = "127.0.0.1"):
    """Runs `tcpkit bench HOST PORT -d 0.5 ARGS...` to completion."""
    return run_tcpkit("bench", host, port, "-d", DURATION, *args, timeout=RUN_TIMEOUT)


def bench_json(tmp_path: Path, port: int, *args, host: str = "127.0.0.1"):
    """Runs bench with a JSON report written to a file; returns (result, report)."""
    out = tmp_path / "report.json"
    result = bench(port, "--format", "json", "--output", out, *args, host=host)
    assert out.is_file(), f"no report written\n{describe(result)}"
    text = out.read_text()
    assert text.endswith("\n") and text.count("\n") == 1, f"not one JSON line: {text!r}"
    return result, json.loads(text)


def describe(result) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def assert_no_errors(report: dict) -> None:
    assert report["errors"] == {name: 0 for name in ERROR_FIELDS}, report


def echo_server(tcpkit_process, *args) -> int:
    _server, port = start_serve(tcpkit_process, "--mode", "echo", "--quiet", *args)
    return port


# ---- pingpong ---------------------------------------------------------------------------------


def test_pingpong_text_report(tcpkit_process):
    port = echo_server(tcpkit_process)
    result = bench(port, "-c", "2", "-s", "100")
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"tcpkit bench pingpong 127\.0\.0\.1:%d: 2 connection\(s\), 100 byte\(s\), 1 thread\(s\), "
                        r"\d+\.\d\d s" % port, lines[0]), lines[0]
    throughput = re.search(r"^  throughput +[\d.]+ MiB/s +\d+ msg/s +\((\d+) messages\)$", result.stdout, re.M)
    assert throughput and int(throughput.group(1)) > 0, result.stdout
    assert re.search(r"^  round trip \(us\)  p50 [\d.]+  p90 [\d.]+  p99 [\d.]+  p99\.9 [\d.]+  max [\d.]+$",
                     result.stdout, re.M), result.stdout
    assert "  errors         mismatched bytes 0, lost bytes 0, refused 0, reset 0, connect failed 0" in lines
    # Without --tls there is no TLS line, and every connection was up in time.
    assert not any(line.lstrip().startswith("tls") for line in lines), result.stdout
    assert "were up when measuring began" not in result.stdout
    assert result.stderr == ""


def test_pingpong_json_report_has_every_field(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-s", "64")
    assert result.returncode == 0, describe(result)
    assert result.stdout == "", "--output FILE should leave stdout empty"
    assert set(report) == REPORT_FIELDS, set(report) ^ REPORT_FIELDS
    assert set(report["errors"]) == ERROR_FIELDS
    assert set(report["latency_us"]) == set(PERCENTILES)
    assert report["mode"] == "pingpong"
    assert (report["conns"], report["size"], report["threads"], report["rate"]) == (1, 64, 1, 0)
    assert report["tls"] is False
    assert report["messages"] > 0
    assert report["bytes"] == report["messages"] * 64
    assert report["msgs_per_s"] > 0 and report["mib_per_s"] > 0
    assert report["connections"] == 1 and report["connected_at_start"] == 1
    assert report["connections_per_s"] == 0  # only connrate reports a connection rate
    assert report["threads_requested"] == 1 and report["missed_sends"] == 0
    assert (report["first_mismatch"], report["connect_error"], report["close_error"]) == (None, None, None)
    assert 0.5 <= report["duration_s"] < 5
    latency = [report["latency_us"][p] for p in PERCENTILES]
    assert 0 < latency[0], latency
    assert latency == sorted(latency), f"percentiles out of order: {latency}"
    assert_no_errors(report)
    assert report["host"] == socket.gethostname()
    assert report["kernel"].startswith("Linux ")
    assert report["compiler"].startswith("g++ ") or "clang" in report["compiler"]
    assert "--size=64" in report["args"] and "--format=json" in report["args"], report["args"]


def test_many_connections_on_two_threads(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process, "--threads", "2")
    result, report = bench_json(tmp_path, port, "-c", "20", "-t", "2", "-s", "256")
    assert result.returncode == 0, describe(result)
    assert (report["conns"], report["threads"]) == (20, 2)
    assert report["connected_at_start"] == 20
    assert report["connections"] == 20
    assert report["messages"] > 0
    assert report["bytes"] == report["messages"] * 256
    assert_no_errors(report)


def test_more_threads_than_connections(tcpkit_process, tmp_path):
    # Threads beyond the connection count would have nothing to do.
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-c", "3", "-t", "8", "-s", "32")
    assert result.returncode == 0, describe(result)
    assert report["connected_at_start"] == 3
    assert report["messages"] > 0
    assert_no_errors(report)


def test_large_messages_round_trip_intact(tcpkit_process, tmp_path):
    # Bigger than a socket buffer: every echo arrives in many pieces.
    port = echo_server(tcpkit_process)
    size = 1 << 20
    result, report = bench_json(tmp_path, port, "-c", "2", "-s", size)
    assert result.returncode == 0, describe(result)
    assert report["messages"] > 0
    assert report["bytes"] == report["messages"] * size
    assert_no_errors(report)


def test_open_loop_rate_bounds_the_messages(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    rate, conns = 200, 4
    result, report = bench_json(tmp_path, port, "-c", conns, "-s", "16", "-r", rate)
    assert result.returncode == 0, describe(result)
    assert report["rate"] == rate
    assert report["messages"] > 0
    assert report["messages"] <= rate * report["duration_s"] * 1.5 + conns, report
    assert_no_errors(report)


# ---- connrate and stream ----------------------------------------------------------------------


def test_connrate_against_echo(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "--mode", "connrate", "-c", "4")
    assert result.returncode == 0, describe(result)
    assert report["mode"] == "connrate"
    assert report["size"] == 1, "connrate sends one byte, as the text report says"
    assert report["connections"] > 0
    assert report["messages"] > 0
    assert report["connections_per_s"] > 0
    latency = [report["latency_us"][p] for p in PERCENTILES]
    assert 0 < latency[0] and latency == sorted(latency), latency
    assert_no_errors(report)


def test_connrate_text_report(tcpkit_process):
    port = echo_server(tcpkit_process)
    result = bench(port, "--mode", "CONNRATE")  # the mode is case-insensitive
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith(f"tcpkit bench connrate 127.0.0.1:{port}: 1 connection(s)")
    match = re.search(r"^  connections/s  \d+  \((\d+) exchanges\)$", result.stdout, re.M)
    assert match and int(match.group(1)) > 0, result.stdout
    assert re.search(r"^  connect latency \(us\)  p50 ", result.stdout, re.M), result.stdout


def test_stream_against_discard(tcpkit_process, tmp_path):
    _server, port = start_serve(tcpkit_process, "--mode", "discard", "--quiet")
    result, report = bench_json(tmp_path, port, "--mode", "stream", "-c", "2", "-s", "16384")
    assert result.returncode == 0, describe(result)
    assert report["mode"] == "stream"
    assert report["bytes"] > 0
    assert report["bytes"] == report["messages"] * 16384
    assert report["connected_at_start"] == 2
    assert_no_errors(report)


def test_connrate_args_name_the_mode(tcpkit_process, tmp_path):
    # The report's args say --mode=connrate, not the option's enum number.
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "--mode", "connrate")
    assert result.returncode == 0, describe(result)
    assert "--mode=connrate" in report["args"].split(), report["args"]


def test_stream_text_report_has_no_latency_line(tcpkit_process):
    _server, port = start_serve(tcpkit_process, "--mode", "discard", "--quiet")
    result = bench(port, "--mode", "stream")
    assert result.returncode == 0, describe(result)
    assert re.search(r"^  throughput +[\d.]+ MiB/s", result.stdout, re.M), result.stdout
    assert " p50 " not in result.stdout


# ---- data errors ------------------------------------------------------------------------------


def echo_until_closed(conn: socket.socket, first_chunk=None) -> None:
    """Echoes until the bench closes; `first_chunk(data)` may rewrite the
    first chunk read."""
    first = True
    try:
        while data := conn.recv(65536):
            if first and first_chunk is not None:
                data = first_chunk(data)
            first = False
            conn.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass


def test_corrupted_echo_is_a_data_error(tmp_path):
    def corrupt_one_byte(data: bytes) -> bytes:
        return bytes([data[0] ^ 0x20]) + data[1:]

    with PeerServer(lambda conn: echo_until_closed(conn, corrupt_one_byte)) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "100")
        server.wait()
    assert result.returncode == 1, describe(result)
    assert report["errors"]["mismatched_bytes"] == 1, report
    assert report["errors"]["lost_bytes"] == 0
    assert report["messages"] > 0
    assert "tcpkit bench: data errors: 1 mismatched and 0 lost bytes" in result.stderr, result.stderr


def test_replies_held_back_and_sent_in_one_piece_are_checked_whole(tmp_path):
    # An open loop keeps sending while a server that echoes in bursts holds
    # the replies: one read then brings back thousands of messages at once,
    # far more than one message's length of pattern, and every byte of it
    # must be checked against the right place in the stream (no error, and
    # no read past the pattern: this crashed the bench once).
    bursts = []

    def echo_in_bursts(conn: socket.socket) -> None:
        held = b""
        burst_at = time.monotonic() + 0.2
        conn.settimeout(0.05)
        try:
            while True:
                try:
                    data = conn.recv(65536)
                    if not data:
                        break
                    held += data
                except socket.timeout:
                    pass
                if time.monotonic() >= burst_at and held:
                    conn.sendall(held)
                    bursts.append(len(held))
                    held = b""
                    burst_at = time.monotonic() + 0.2
        except (ConnectionResetError, BrokenPipeError):
            pass

    with PeerServer(echo_in_bursts) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "16", "-r", "40000")
        server.wait()
    # The case under test happened: a burst of more than a thousand messages.
    assert bursts and max(bursts) > 16 * 1000, bursts
    assert result.returncode == 0, describe(result)
    assert report["messages"] > 0, report
    assert_no_errors(report)


def test_extra_bytes_from_the_server_are_counted(tmp_path):
    extra = b"\0" * 7

    with PeerServer(lambda conn: echo_until_closed(conn, lambda data: data + extra)) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "100")
        server.wait()
    assert result.returncode == 1, describe(result)
    # The 7 zero bytes can never match the letter pattern.
    assert report["errors"]["mismatched_bytes"] >= len(extra), report
    assert "data errors" in result.stderr, result.stderr


def cpu_of_a_run_with_nothing_to_do(*args) -> float:
    """CPU seconds of a 3 s `tcpkit bench ARGS` against a server that reads
    and never answers."""
    def read_and_never_answer(conn: socket.socket) -> None:
        while conn.recv(1024):
            pass

    with PeerServer(read_and_never_answer) as server:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = run_tcpkit("bench", "127.0.0.1", server.port, "-d", "3", "--format", "json", *args,
                            timeout=RUN_TIMEOUT)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 1, describe(result)  # no echo came back
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_a_quiet_run_does_not_spin(tmp_path):
    """Regression: without --live, the main thread's once-a-second tick stayed
    in the past after the first second, so it slept for nothing and spun for
    the rest of the run beside the workers (a core's worth of CPU, on the
    core the client had)."""
    cpu = cpu_of_a_run_with_nothing_to_do()
    # Idle workers and a sleeping main thread: a spin would cost about 2 s.
    assert cpu < 1.0, f"bench used {cpu:.2f} s of CPU in a 3 s run with nothing to do"


def test_busy_poll_round_trips_intact_and_reports_the_idle_spin(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-c", "2", "-s", "100", "--busy-poll", "200")
    assert result.returncode == 0, describe(result)
    assert report["messages"] > 0 and report["bytes"] == report["messages"] * 100
    assert_no_errors(report)
    assert report["busy_poll_us"] == 200
    # Some spin found nothing (at least while connecting), and the spin
    # cannot have taken longer than the run.
    assert 0 < report["busy_poll_idle_s"] < report["duration_s"] + 5, report
    text = bench(port, "-c", "1", "-s", "16", "--busy-poll", "50")
    assert text.returncode == 0, describe(text)
    assert re.search(r"^  busy poll      50 us before each sleep; [\d.]+ s spent spinning idle$", text.stdout,
                     re.M), text.stdout


def test_without_busy_poll_nothing_spins(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-s", "16")
    assert result.returncode == 0, describe(result)
    assert (report["busy_poll_us"], report["busy_poll_idle_s"]) == (0, 0)
    assert "busy poll" not in bench(port, "-s", "16").stdout


def test_a_busy_polling_run_with_nothing_to_do_still_sleeps(tmp_path):
    """Busy polling spins before each sleep, not instead of it: a client whose
    server never answers spins for a millisecond and then sleeps."""
    cpu = cpu_of_a_run_with_nothing_to_do("--busy-poll", "1000")
    # A spin that never ended would cost about 3 s.
    assert cpu < 1.0, f"bench used {cpu:.2f} s of CPU in a 3 s run with nothing to do"


def test_server_closing_mid_run_counts_reset_and_lost_bytes(tmp_path):
    size, half = 200, 100

    def echo_then_close_halfway(conn: socket.socket) -> None:
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            conn.sendall(recv_exact(conn, size))
        # One more request: echo half of it and close; the other half is lost.
        conn.sendall(recv_exact(conn, size)[:half])

    with PeerServer(echo_then_close_halfway) as server:
        result, report = bench_json(tmp_path, server.port, "-s", size)
        server.wait()
    assert result.returncode == 1, describe(result)
    assert report["errors"]["reset"] == 1, report
    # The client answers the half that came back with as many new bytes (it
    # keeps `size` bytes in flight), so a whole `size` never came back.
    assert report["errors"]["lost_bytes"] == size, report
    assert report["errors"]["mismatched_bytes"] == 0, report
    assert report["connected_at_start"] == 1
    assert f"data errors: 0 mismatched and {size} lost bytes" in result.stderr, result.stderr


def test_no_server_is_a_clear_error(tmp_path):
    port = pick_free_port()
    result = bench(port, "-c", "3")
    assert result.returncode == 1, describe(result)
    assert f"no connection to 127.0.0.1:{port} succeeded (refused 3, failed 0)" in result.stderr, result.stderr
    assert "is a server running?" in result.stderr
    assert "only 0 of 3 connections were up when measuring began" in result.stdout


def test_no_server_json_counts_refused(tmp_path):
    port = pick_free_port()
    result, report = bench_json(tmp_path, port, "-c", "2")
    assert result.returncode == 1, describe(result)
    assert report["errors"]["refused"] == 2, report
    assert report["messages"] == 0 and report["connected_at_start"] == 0
    assert "refused" in result.stderr


def test_connrate_with_no_server_is_a_clear_error():
    port = pick_free_port()
    result = bench(port, "--mode", "connrate")
    assert result.returncode == 1, describe(result)
    assert re.search(r"no connection to 127\.0\.0\.1:%d succeeded \(refused [1-9]\d*, failed 0\) — "
                     r"is a server running\?" % port, result.stderr), result.stderr


@pytest.mark.parametrize("mode, why", [("pingpong", "no echo came back in"),
                                       ("connrate", "no connection got its byte echoed in")])
def test_a_server_that_does_not_echo_is_a_clear_error(tcpkit_process, tmp_path, mode, why):
    # Connected, but nothing comes back: exit 1 and say why, not silently.
    _server, port = start_serve(tcpkit_process, "--mode", "discard", "--quiet")
    result, report = bench_json(tmp_path, port, "--mode", mode)
    assert result.returncode == 1, describe(result)
    assert report["messages"] == 0 and report["connections"] == 1, report
    assert_no_errors(report)
    assert why in result.stderr and "is it an echo server" in result.stderr, result.stderr


# ---- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["127.0.0.1", "1", "--mode", "bogus"], "--mode"),
    (["127.0.0.1", "1", "--conns", "0"], "--conns"),
    (["127.0.0.1", "1", "--size", "0"], "--size"),
    (["127.0.0.1", "1", "--threads", "0"], "--threads"),
    (["127.0.0.1", "1", "--duration", "0"], "--duration"),
    (["127.0.0.1", "1", "--format", "xml"], "--format"),
    (["127.0.0.1", "1", "--busy-poll", "-1"], "--busy-poll"),
    (["127.0.0.1", "1", "--busy-poll", "1000001"], "--busy-poll"),
    (["127.0.0.1", "1", "--busy-poll", "fast"], "--busy-poll"),
    (["127.0.0.1"], "PORT"),
    (["127.0.0.1", "1", "--tls-ca", "CERT"], "--tls"),
    (["127.0.0.1", "1", "--insecure"], "--tls"),
    (["127.0.0.1", "1", "--sni", "example.com"], "--tls"),
    (["127.0.0.1", "1", "--tls", "--insecure", "--tls-ca", "CERT"], "--insecure"),
    (["127.0.0.1", "1", "--rate", "nan"], "--rate: 'nan' is not a finite number"),
    (["127.0.0.1", "1", "--duration", "nan"], "--duration: 'nan' is not a finite number"),
], ids=["bad-mode", "conns-0", "size-0", "threads-0", "duration-0", "bad-format",
        "busy-poll-negative", "busy-poll-over-a-second", "busy-poll-not-a-number", "missing-port",
        "tls-ca-without-tls", "insecure-without-tls", "sni-without-tls", "insecure-with-tls-ca",
        "rate-nan", "duration-nan"])
def test_usage_errors_exit_2(cert, args, needle):
    args = [cert[0] if a == "CERT" else a for a in args]
    started = time.monotonic()
    result = run_tcpkit("bench", *args, timeout=RUN_TIMEOUT)
    assert result.returncode == 2, describe(result)
    assert needle in result.stderr, result.stderr
    assert result.stdout == ""
    assert time.monotonic() - started < scaled(3), "a usage error should not run the benchmark"


def test_help_lists_the_options():
    result = run_tcpkit("bench", "--help")
    assert result.returncode == 0, describe(result)
    for option in ("--mode", "--conns", "--size", "--duration", "--threads", "--rate", "--connect-timeout",
                   "--format", "--output", "--tls", "--tls-ca", "--insecure", "--sni", "--busy-poll"):
        assert option in result.stdout, option


# ---- TLS --------------------------------------------------------------------------------------


def tls_server(tcpkit_process, cert, mode: str = "echo") -> int:
    crt, key = cert
    _server, port = start_serve(tcpkit_process, "--mode", mode, "--quiet", "--tls-cert", crt, "--tls-key", key)
    return port


@pytest.mark.parametrize("mode, server_mode", [("pingpong", "echo"), ("stream", "discard"),
                                               ("connrate", "echo")])
def test_tls_with_the_right_ca(tcpkit_process, tmp_path, cert, mode, server_mode):
    port = tls_server(tcpkit_process, cert, server_mode)
    result, report = bench_json(tmp_path, port, "--mode", mode, "-c", "2", "-s", "1000", "--tls", "--tls-ca",
                                cert[0])
    assert result.returncode == 0, describe(result)
    assert report["tls"] is True
    assert report["errors"]["tls_failed"] == 0, report
    assert_no_errors(report)
    assert report["messages"] > 0
    assert report["connections"] > 0
    if mode != "connrate":
        assert report["connected_at_start"] == 2
        assert report["bytes"] == report["messages"] * 1000


def test_tls_text_report_and_sni(tcpkit_process, cert):
    # The certificate names localhost: --sni picks that name for 127.0.0.1.
    port = tls_server(tcpkit_process, cert)
    result = bench(port, "--tls", "--tls-ca", cert[0], "--sni", "localhost")
    assert result.returncode == 0, describe(result)
    assert "  tls            handshakes failed 0\n" in result.stdout, result.stdout


def test_tls_wrong_sni_fails_verification(tcpkit_process, cert):
    port = tls_server(tcpkit_process, cert)
    result = bench(port, "--tls", "--tls-ca", cert[0], "--sni", "not-the-name.example")
    assert result.returncode == 1, describe(result)
    assert "every TLS handshake failed" in result.stderr, result.stderr


def test_tls_self_signed_without_ca_fails_clearly(tcpkit_process, tmp_path, cert):
    port = tls_server(tcpkit_process, cert)
    result, report = bench_json(tmp_path, port, "--tls", "-c", "2")
    assert result.returncode == 1, describe(result)
    assert re.search(r"every TLS handshake failed: .*certificate verify failed: self-signed certificate",
                     result.stderr), result.stderr
    assert report["errors"]["tls_failed"] == 2, report
    assert report["messages"] == 0


def test_tls_insecure_against_a_plain_server(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "--tls", "--insecure")
    assert result.returncode == 1, describe(result)
    assert report["tls"] is True
    assert report["errors"]["tls_failed"] > 0, report
    assert report["messages"] == 0
    assert "every TLS handshake failed" in result.stderr, result.stderr


def test_tls_insecure_accepts_the_self_signed_server(tcpkit_process, tmp_path, cert):
    port = tls_server(tcpkit_process, cert)
    result, report = bench_json(tmp_path, port, "--tls", "--insecure")
    assert result.returncode == 0, describe(result)
    assert report["messages"] > 0
    assert_no_errors(report)


def test_tls_ca_that_is_not_a_certificate(tmp_path):
    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("hello\n")
    result = run_tcpkit("bench", "127.0.0.1", pick_free_port(), "-d", DURATION, "--tls", "--tls-ca", bogus,
                        timeout=RUN_TIMEOUT)
    assert result.returncode == 1, describe(result)
    assert "tcpkit bench: --tls-ca:" in result.stderr, result.stderr


def test_tls_to_a_server_that_never_answers_the_handshake(tcpkit_process, tmp_path):
    # A plain discard server reads the ClientHello and says nothing: every
    # handshake ends at the handshake timeout (--connect-timeout bounds both).
    _server, port = start_serve(tcpkit_process, "--mode", "discard", "--quiet")
    result, report = bench_json(tmp_path, port, "--tls", "--insecure", "--connect-timeout", "0.5")
    assert result.returncode == 1, describe(result)
    assert report["connected_at_start"] == 0 and report["messages"] == 0, report
    # Whether the handshake timeout or the end of the connect phase comes
    # first, the message names the server and the likely cause.
    assert f"TLS handshake with 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "is it a TLS server?" in result.stderr, result.stderr


def test_tls_to_a_plaintext_server_asks_whether_it_speaks_tls(tcpkit_process, tmp_path):
    # The ack server answers the ClientHello in plain text; the handshake
    # fails on it, and the message gives connect's hint.
    _server, port = start_serve(tcpkit_process, "--mode", "ack", "--quiet")
    result, report = bench_json(tmp_path, port, "--tls", "--insecure", "--connect-timeout", "2")
    assert result.returncode == 1, describe(result)
    assert report["messages"] == 0, report
    assert "is the server speaking TLS on this port?" in result.stderr, result.stderr


# ---- several client threads against several server threads ----------------------------------

def test_stream_threads_into_a_threaded_discard_server(tcpkit_process, tmp_path):
    _server, port = start_serve(tcpkit_process, "--mode", "discard", "--quiet", "--threads", "2")
    result, report = bench_json(tmp_path, port, "--mode", "stream", "--threads", "2", "--conns", "4")
    assert result.returncode == 0, describe(result)
    assert report["connected_at_start"] == 4
    assert report["bytes"] > 0
    assert_no_errors(report)


def test_connrate_threads_against_a_threaded_echo_server(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process, "--threads", "2")
    result, report = bench_json(tmp_path, port, "--mode", "connrate", "--threads", "2", "--conns", "4")
    assert result.returncode == 0, describe(result)
    assert report["messages"] > 0
    assert report["connections"] >= report["messages"]
    assert report["errors"]["connect_failed"] == 0


# ---- regressions: pacing, memory, reports, diagnoses ------------------------------------------


def pattern_byte(pos: int) -> int:
    """The byte at position `pos` of a ping-pong connection's stream."""
    j = pos % 251
    return ord("a") + j % 26 + (j // 26) % 7


def run_measured(*args, timeout: float = RUN_TIMEOUT, **popen):
    """Runs `tcpkit ARGS...`; returns (exit status, stdout, stderr, seconds,
    peak resident memory in MiB) of that one process."""
    started = time.monotonic()
    proc = subprocess.Popen([str(tcpkit_path()), *map(str, args)], stdout=popen.pop("stdout", subprocess.PIPE),
                            stderr=subprocess.PIPE, text=True, **popen)
    out, err = [], []
    readers = [threading.Thread(target=lambda f, into: into.append(f.read()), args=(f, into), daemon=True)
               for f, into in ((proc.stdout, out), (proc.stderr, err)) if f is not None]
    for reader in readers:
        reader.start()
    deadline = started + scaled(timeout)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise TimeoutError(f"tcpkit {' '.join(map(str, args))} ran past {timeout} s")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(5)
    return proc.returncode, "".join(out), "".join(err), elapsed, usage.ru_maxrss / 1024


class NeverReads:
    """A server that accepts and never reads: whatever the client sends
    stays queued, first in the kernel, then in the client."""

    def __init__(self):
        self.release = threading.Event()
        self.server = PeerServer(lambda conn: self.release.wait(scaled(RUN_TIMEOUT)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.__exit__(*exc)


@pytest.mark.parametrize("rate", ["3e9", "1e-300", "1e300", "100000001", "0.0009"])
def test_regression_rate_out_of_range_is_a_usage_error(rate):
    """Regression: an extreme --rate made the pacing interval 0 ns (or
    overflow), and the ticker stepped through it forever, its memory growing."""
    started = time.monotonic()
    result = run_tcpkit("bench", "127.0.0.1", "1", "-d", DURATION, "-r", rate, timeout=RUN_TIMEOUT)
    assert result.returncode == 2, describe(result)
    assert f"--rate: '{rate}' is out of range" in result.stderr, result.stderr
    assert "from 0.001 to 1e+08 messages per second" in result.stderr, result.stderr
    assert time.monotonic() - started < scaled(3), "a usage error should not run the benchmark"


@pytest.mark.parametrize("size, rate", [(65536, 20000), (1, 100000000)], ids=["big-messages", "fastest-rate"])
def test_regression_open_loop_against_a_server_that_never_reads_is_bounded(tmp_path, size, rate):
    """Regression: with --rate, every message due was queued whether or not
    the server read: against one that never reads, `-d 3 -s 65536 -r 20000`
    ran 10.9 s and grew to 1.9 GB, and a rate of one message every 10 ns
    stepped through each tick message by message. Now a connection's room
    is bounded, the messages due meanwhile are counted as missed, and the
    run ends on time."""
    out = tmp_path / "report.json"
    with NeverReads() as server:
        status, stdout, stderr, seconds, peak_mib = run_measured(
            "bench", "127.0.0.1", server.server.port, "-d", "1", "-s", size, "-r", rate, "--format", "json",
            "-o", out)
    report = json.loads(out.read_text())
    assert status == 1, stderr  # no echo came back
    assert report["missed_sends"] > 0, report
    assert "the server fell behind" in stderr and "not sent" in stderr, stderr
    # Connect (at once) + 1 s + teardown; the overrun was about 8 s.
    assert seconds < 1 + scaled(3), f"a 1 s run took {seconds:.1f} s"
    # 1 MiB unsent at most plus the kernel's buffers; it was gigabytes. A
    # sanitizer's runtime and shadow memory add a few hundred MiB of their own.
    assert peak_mib < (600 if SANITIZER else 150), f"peak memory {peak_mib:.0f} MiB"


def test_regression_open_loop_reports_no_missed_sends_when_the_server_keeps_up(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-s", "16", "-r", "100")
    assert result.returncode == 0, describe(result)
    assert report["missed_sends"] == 0 and report["messages"] > 0, report
    text = bench(port, "-s", "16", "-r", "100")
    assert re.search(r"^  open loop      100 msg/s asked; every message sent when due$", text.stdout, re.M), text.stdout


@pytest.mark.parametrize("mode", ["stream", "connrate"])
def test_regression_rate_outside_pingpong_is_a_usage_error(mode):
    """Regression: --rate was ignored by stream and connrate, and the JSON
    report still carried it."""
    result = run_tcpkit("bench", "127.0.0.1", "1", "-d", DURATION, "--mode", mode, "-r", "10",
                        timeout=RUN_TIMEOUT)
    assert result.returncode == 2, describe(result)
    assert f"--rate paces pingpong only; --mode {mode}" in result.stderr, result.stderr
    assert result.stdout == ""


def test_regression_report_to_a_full_device_fails(tcpkit_process):
    """Regression: a report that could not be written (disk full) was lost
    and the exit status was 0."""
    port = echo_server(tcpkit_process)
    result = bench(port, "-s", "16", "-o", "/dev/full")
    assert result.returncode == 1, describe(result)
    assert "cannot write the report to --output '/dev/full': No space left on device" in result.stderr
    with open("/dev/full", "w") as full:
        status, _out, stderr, _s, _m = run_measured("bench", "127.0.0.1", port, "-d", DURATION, "-s", "16",
                                                    stdout=full)
    assert status == 1, stderr
    assert "cannot write the report to standard output: No space left on device" in stderr, stderr


def test_regression_output_in_a_missing_directory_fails_before_the_run(tmp_path):
    """Regression: --output was opened only after the whole run, and its
    failure gave no reason."""
    missing = tmp_path / "no-such-dir" / "report.json"
    started = time.monotonic()
    result = run_tcpkit("bench", "127.0.0.1", pick_free_port(), "-d", "5", "-o", missing, timeout=RUN_TIMEOUT)
    assert result.returncode == 1, describe(result)
    assert f"cannot write --output '{missing}': No such file or directory" in result.stderr, result.stderr
    assert time.monotonic() - started < scaled(3), "the 5 s run should not have started"


def test_regression_stream_connection_closed_mid_run_fails(tmp_path):
    """Regression: in stream mode a connection the server reset mid-run was
    counted, yet the exit status was 0 (pingpong's was 1)."""
    def read_then_reset(conn: socket.socket) -> None:
        received = 0
        while received < 100_000:
            received += len(conn.recv(65536))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")

    with PeerServer(read_then_reset) as server:
        result, report = bench_json(tmp_path, server.port, "--mode", "stream")
        server.wait()
    assert result.returncode == 1, describe(result)
    assert report["errors"]["reset"] == 1, report
    assert report["close_error"], report
    assert "1 of 1 connection(s) closed mid-run (the first: " in result.stderr, result.stderr


def test_regression_server_closing_at_once_is_not_no_connection(tmp_path):
    """Regression: connections that were up and were closed by the server
    before measuring began were reported as "no connection ... succeeded
    (refused 0, failed 0) — is a server running?"."""
    def echo_once_and_close(conn: socket.socket) -> None:
        conn.sendall(recv_exact(conn, 100))

    with PeerServer(echo_once_and_close) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "100")
        server.wait()
    assert result.returncode == 1, describe(result)
    assert "no connection" not in result.stderr, result.stderr
    assert report["connections"] == 1 and report["errors"]["reset"] == 1, report
    assert "1 of 1 connection(s) closed mid-run (the first: " in result.stderr, result.stderr


def test_regression_first_mismatch_names_connection_offset_and_bytes(tmp_path):
    """Regression: a data error said how many bytes were wrong, never where."""
    offset = 10_000
    seen = 0

    def corrupt_one(data: bytes) -> bytes:
        nonlocal seen
        if seen <= offset < seen + len(data):
            data = data[:offset - seen] + bytes([data[offset - seen] ^ 0x20]) + data[offset - seen + 1:]
        seen += len(data)
        return data

    def echo(conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(corrupt_one(data))
        except (ConnectionResetError, BrokenPipeError):
            pass

    with PeerServer(echo) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "100")
        server.wait()
    want = pattern_byte(offset)
    assert result.returncode == 1, describe(result)
    assert report["first_mismatch"] == {"connection": 0, "offset": offset, "expected": want, "got": want ^ 0x20,
                                        "shift": 0}, report
    assert (f"first mismatch: connection 0, stream byte {offset}: expected 0x{want:02x} '{chr(want)}', "
            f"got 0x{want ^ 0x20:02x} '{chr(want ^ 0x20)}'") in result.stderr, result.stderr


def test_regression_a_dropped_byte_is_reported_as_missing(tmp_path):
    """Regression: a server that dropped a byte showed only as thousands of
    mismatched bytes and 0 lost."""
    dropped_at = []

    def echo_but_drop_one(conn: socket.socket) -> None:
        total = 0
        try:
            while data := conn.recv(65536):
                if not dropped_at and total >= 5000 and len(data) > 200:
                    dropped_at.append(total)
                    conn.sendall(data[1:])
                else:
                    conn.sendall(data)
                total += len(data)
        except (ConnectionResetError, BrokenPipeError):
            pass

    with PeerServer(echo_but_drop_one) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "4096")
        server.wait()
    assert result.returncode == 1, describe(result)
    assert dropped_at, "the server never dropped a byte"
    mismatch = report["first_mismatch"]
    assert (mismatch["connection"], mismatch["offset"], mismatch["shift"]) == (0, dropped_at[0], 1), report
    assert "1 byte(s) missing" in result.stderr, result.stderr


def test_regression_extra_bytes_name_where_they_came(tmp_path):
    with PeerServer(lambda conn: echo_until_closed(conn, lambda data: data + b"Z")) as server:
        result, report = bench_json(tmp_path, server.port, "-s", "100")
        server.wait()
    assert result.returncode == 1, describe(result)
    assert report["first_mismatch"] == {"connection": 0, "offset": 100, "expected": None, "got": ord("Z"),
                                        "shift": 0}, report
    assert "stream byte 100: got 0x5a 'Z', beyond what was sent" in result.stderr, result.stderr


@pytest.mark.parametrize("backend", ["epoll", "uring"])
@pytest.mark.parametrize("threads", [1, 2])
def test_regression_bench_runs_a_thread_per_worker_and_no_other(tcpkit_process, backend, threads):
    """Worker 0 runs on the main thread, beside the run's timers, so
    `--threads 1` is one thread. With a main thread that only slept beside
    the worker, every read and send of the worker took the kernel's
    shared-descriptor-table path."""
    port = echo_server(tcpkit_process, "--threads", "2")
    proc = subprocess.Popen([str(tcpkit_path()), "bench", "127.0.0.1", str(port), "-c", "4", "-s", "16",
                             "-d", "2", "-t", str(threads), "--io-backend", backend, "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The most threads seen while it runs (a sanitizer's start-up is
        # slow, so no one moment is sure to fall inside the run).
        names = []
        while proc.poll() is None:
            try:
                now = user_threads(proc.pid)
            except OSError:  # it ended between poll() and the read
                break
            names = max(names, now, key=len)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["messages"] > 0 and report["threads"] == threads, report
    assert_no_errors(report)
    # ThreadSanitizer's runtime starts a thread of its own once a second
    # one exists.
    runtime = 1 if SANITIZER == "thread" and threads > 1 else 0
    assert len(names) == threads + runtime, names


def test_live_progress_on_a_terminal_ticks_each_second(tcpkit_process):
    """On a terminal, a line a second (rewritten in place) says how the run
    goes; the report follows on stdout."""
    port = echo_server(tcpkit_process)
    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([str(tcpkit_path()), "bench", "127.0.0.1", str(port), "-c", "2", "-s", "16",
                                 "-d", "2.5"], stdout=subprocess.PIPE, stderr=secondary, text=True)
        os.close(secondary)
        secondary = -1
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if secondary >= 0:
            os.close(secondary)
        os.close(main)
    assert proc.returncode == 0, seen
    ticks = re.findall(rb"\r +(\d+\.\d) s +[\d.]+ MiB/s +\d+ msg/s +conns +2 +errors +0", seen)
    assert [float(t) for t in ticks][:2] == pytest.approx([1.0, 2.0], abs=0.5), seen
    assert "throughput" in out, out


def test_regression_report_shows_the_threads_used(tcpkit_process, tmp_path):
    """Regression: the report showed --threads as asked, though no more
    threads than connections run."""
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-c", "3", "-t", "8", "-s", "32")
    assert result.returncode == 0, describe(result)
    assert (report["threads"], report["threads_requested"]) == (3, 8), report
    text = bench(port, "-c", "3", "-t", "8", "-s", "32")
    assert "3 connection(s), 32 byte(s), 3 thread(s) (of 8 asked: one per connection at most)," in text.stdout


# For the tests that use up every descriptor on purpose.
UBSAN_NEEDS_A_DESCRIPTOR = pytest.mark.skipif(SANITIZER == "address", reason=(
    "UBSan's vptr check probes memory through a pipe(); with every descriptor in use pipe() fails "
    "and it reports a false 'invalid vptr' on the first virtual call (std::error_category) and halts"))


@UBSAN_NEEDS_A_DESCRIPTOR
def test_regression_connect_phase_ends_when_every_connection_has_settled(tcpkit_process, tmp_path):
    """Regression: when some connects failed, the connect phase waited the
    whole --connect-timeout, and the report never said why they failed.
    Here the client runs out of file descriptors part way."""
    port = echo_server(tcpkit_process)
    out = tmp_path / "report.json"

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    status, _stdout, stderr, seconds, _m = run_measured(
        "bench", "127.0.0.1", port, "-d", DURATION, "-c", "62", "-s", "16", "--connect-timeout", "20",
        "--format", "json", "-o", out, preexec_fn=few_fds)
    report = json.loads(out.read_text())
    assert report["errors"]["connect_failed"] > 0 and report["connected_at_start"] > 0, report
    assert report["connect_error"] == "Too many open files", report
    assert seconds < scaled(10), f"the run waited {seconds:.1f} s: the connect timeout"
    # Fewer connections than asked fail the run (see
    # test_regression_fewer_descriptors_than_connections_fails_and_says_which_limit).
    assert status == 1, stderr


@pytest.mark.parametrize("port, needle", [("0", "'0' is not a port to connect to"),
                                          ("70000", "'70000' is not a port to connect to: give a whole number "
                                                    "from 1 to 65535")])
def test_regression_port_out_of_range_is_a_usage_error(port, needle):
    result = run_tcpkit("bench", "127.0.0.1", port, "-d", DURATION, timeout=RUN_TIMEOUT)
    assert result.returncode == 2, describe(result)
    assert needle in result.stderr, result.stderr
    assert "not expected" not in result.stderr


def test_regression_connrate_text_report_names_the_one_byte_sent(tcpkit_process):
    port = echo_server(tcpkit_process)
    result = bench(port, "--mode", "connrate")
    assert result.returncode == 0, describe(result)
    assert f"tcpkit bench connrate 127.0.0.1:{port}: 1 connection(s), 1 byte(s), 1 thread(s)," in result.stdout


def echo_then_hold(conn: socket.socket, seconds: float = 0.2) -> None:
    """Echoes for `seconds`, then reads on and answers nothing, until the
    bench closes: a server that stopped answering."""
    deadline = time.monotonic() + seconds
    try:
        while data := conn.recv(65536):
            if time.monotonic() < deadline:
                conn.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass


@pytest.mark.parametrize("rate", [None, "200"], ids=["closed-loop", "open-loop"])
def test_regression_a_server_that_stops_answering_fails_the_run(tmp_path, rate):
    """Regression: the messages a server never answered were left out of the
    report: a server that answered for 0.2 s and then stalled for the rest
    of a 2 s run got the percentiles of its first 0.2 s (max 17 ms), and the
    exit status 0; open-loop (--rate 1000), 1,700 unanswered messages were
    not counted anywhere ("every message sent when due"). Now each message
    still unanswered at the end counts as a round trip at least as long as
    it has waited, the report says how many there were, and a server that
    owed an answer for half the run or more fails it."""
    rate_args = ("-r", rate) if rate else ()
    out = tmp_path / "report.json"
    with PeerServer(echo_then_hold) as server:
        result = run_tcpkit("bench", "127.0.0.1", server.port, "-d", "2", "-s", "16", *rate_args,
                            "--format", "json", "-o", out, timeout=RUN_TIMEOUT)
        server.wait()
    report = json.loads(out.read_text())
    assert result.returncode == 1, describe(result)
    assert report["messages"] > 0, report
    assert report["unanswered"] >= 1, report
    assert report["latency_us"]["max"] >= report["oldest_unanswered_us"] > 0, report
    assert report["oldest_unanswered_us"] >= report["duration_s"] * 1e6 / 2, report
    assert "tcpkit bench: the server stopped answering:" in result.stderr, result.stderr
    assert "unanswered at the end" in result.stderr, result.stderr


def read_then_hold(conn: socket.socket, release: threading.Event, limit: int = 1 << 20) -> None:
    """Reads `limit` bytes, then reads nothing more until `release` (after
    the bench has ended: its close could not reach us, queued behind the
    bytes we leave unread): a server that stopped reading."""
    taken = 0
    try:
        while taken < limit and (data := conn.recv(65536)):
            taken += len(data)
    except (ConnectionResetError, BrokenPipeError):
        return
    release.wait(scaled(60))


def slow_reader(conn: socket.socket) -> None:
    """Takes 64 KiB every 20 ms until the bench closes: slow, not stalled."""
    try:
        while conn.recv(65536):
            time.sleep(0.02)
    except (ConnectionResetError, BrokenPipeError):
        pass


def test_regression_a_stream_server_that_stops_reading_fails_the_run(tmp_path):
    """Regression: in stream mode a server that stopped reading showed only as
    a lower rate, exit 0. Now a connection whose server took nothing in the
    second half of the run is reported, and fails it."""
    out = tmp_path / "report.json"
    release = threading.Event()
    with PeerServer(lambda conn: read_then_hold(conn, release)) as server:
        try:
            result = run_tcpkit("bench", "127.0.0.1", server.port, "--mode", "stream", "-d", "2",
                                "--format", "json", "-o", out, timeout=RUN_TIMEOUT)
        finally:
            release.set()
        server.wait()
    report = json.loads(out.read_text())
    assert result.returncode == 1, describe(result)
    assert report["unanswered"] == 1, report
    assert report["oldest_unanswered_us"] >= report["duration_s"] * 1e6 / 2, report
    assert "tcpkit bench: the server stopped reading:" in result.stderr, result.stderr


def test_a_slow_stream_server_that_still_reads_is_not_called_stalled(tmp_path):
    # A message of 4 MiB takes it longer than half the run, but every part
    # of the run moves bytes.
    out = tmp_path / "report.json"
    with PeerServer(slow_reader) as server:
        result = run_tcpkit("bench", "127.0.0.1", server.port, "--mode", "stream", "-d", "2",
                            "-s", str(4 << 20), "--format", "json", "-o", out, timeout=RUN_TIMEOUT)
        server.wait()
    report = json.loads(out.read_text())
    assert result.returncode == 0, describe(result)
    assert report["unanswered"] == 0, report
    assert "stopped reading" not in result.stderr, result.stderr


def test_regression_a_server_that_keeps_answering_has_nothing_unanswered_to_report(tcpkit_process, tmp_path):
    port = echo_server(tcpkit_process)
    result, report = bench_json(tmp_path, port, "-s", "16", "-c", "4")
    assert result.returncode == 0, describe(result)
    # At most the one message each connection has in flight when the run ends.
    assert report["unanswered"] <= 4 * 2, report
    assert report["interrupted"] is None, report
    assert "stopped answering" not in result.stderr


class EchoesEveryOther:
    """A server for connrate: accepts until stopped; echoes the byte of every
    other connection and closes the rest without a word."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                try:
                    data = conn.recv(1)
                    if self.accepted % 2 == 0 and data:
                        conn.sendall(data)
                        conn.recv(1)  # until the bench closes
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.listener.close()


def test_regression_connrate_connections_closed_before_the_echo_fail_the_run(tmp_path):
    """Regression: in connrate, connections the server closed before
    echoing their byte were counted (reset) but the run exited 0 with no
    word on standard error, and the report gave no reason for them."""
    out = tmp_path / "report.json"
    with EchoesEveryOther() as server:
        result = run_tcpkit("bench", "127.0.0.1", server.port, "-d", DURATION, "--mode", "connrate",
                            "--format", "json", "-o", out, timeout=RUN_TIMEOUT)
    report = json.loads(out.read_text())
    assert result.returncode == 1, describe(result)
    assert report["messages"] > 0 and report["errors"]["reset"] > 0, report
    assert report["close_error"] == "closed by the server", report
    assert re.search(r"tcpkit bench: \d+ connection\(s\) closed before their byte was echoed "
                     r"\(the first: closed by the server\)", result.stderr), result.stderr


@UBSAN_NEEDS_A_DESCRIPTOR
def test_regression_fewer_descriptors_than_connections_fails_and_says_which_limit(tcpkit_process, tmp_path):
    """Regression: with `ulimit -n 64`, `-c 100` ran 58 connections, said
    "100 connection(s)" in its first line, and exited 0; and `-c 1000000`
    under a limit of 20,000 ran past a minute trying. More connections than
    the limit allows are refused at once; a few connects that fail for
    want of descriptors fail the run and name the limit."""
    port = echo_server(tcpkit_process)
    out = tmp_path / "report.json"

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    status, stdout, stderr, _seconds, _m = run_measured(
        "bench", "127.0.0.1", port, "-d", DURATION, "-c", "1000000", "-s", "16", "-o", out, preexec_fn=few_fds)
    assert status == 1 and stdout == "", stderr
    assert ("tcpkit bench: --conns 1000000 needs a file descriptor per connection, but this process may open 64 "
            "files at most (ulimit -n, and the hard limit ulimit -Hn): raise the limit, or give fewer --conns") \
        in stderr, stderr
    assert not out.exists()

    status, _stdout, stderr, _seconds, _m = run_measured(
        "bench", "127.0.0.1", port, "-d", DURATION, "-c", "62", "-s", "16", "--format", "json", "-o", out,
        preexec_fn=few_fds)
    report = json.loads(out.read_text())
    assert status == 1, stderr
    assert 0 < report["connected_at_start"] < 62, report
    assert re.search(r"tcpkit bench: \d+ connection attempt\(s\) failed \(refused 0, failed \d+, TLS handshakes "
                     r"failed 0\); the first: Too many open files \(the limit is 64 open files: raise ulimit -n, "
                     r"or fewer --conns\)", stderr), stderr


@UBSAN_NEEDS_A_DESCRIPTOR
def test_regression_descriptors_that_run_out_while_threads_start_do_not_hang(tcpkit_process, tmp_path):
    """Regression: worker 0 connected before the other threads had their
    loops; when its connections took the last descriptors, a loop could not
    be created, the run said "cannot start" and then hung for good, its
    clients closing on a loop already destroyed. Now every loop comes first,
    and the connects that find no descriptor fail the run."""
    port = echo_server(tcpkit_process)
    out = tmp_path / "report.json"

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    status, _stdout, stderr, _seconds, _m = run_measured(
        "bench", "127.0.0.1", port, "-d", DURATION, "-c", "63", "-t", "8", "-s", "16", "--format", "json",
        "-o", out, preexec_fn=few_fds)
    assert status == 1, stderr
    report = json.loads(out.read_text())
    assert report["threads"] == 8 and 0 < report["connected_at_start"] < 63, report
    assert "Too many open files" in stderr, stderr


def test_regression_the_soft_descriptor_limit_is_raised_for_the_connections(tcpkit_process, tmp_path):
    """Regression: a soft limit of 64 open files failed `-c 100` although
    the hard limit allowed it; a load generator raises its soft limit."""
    port = echo_server(tcpkit_process)
    out = tmp_path / "report.json"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard limit on open files is {hard}")

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    status, _stdout, stderr, _seconds, _m = run_measured(
        "bench", "127.0.0.1", port, "-d", DURATION, "-c", "100", "-s", "16", "--format", "json", "-o", out,
        preexec_fn=low_soft_limit)
    report = json.loads(out.read_text())
    assert status == 0, stderr
    assert report["connected_at_start"] == 100 and report["errors"]["connect_failed"] == 0, report


def test_regression_unix_flag_and_host_together_are_a_usage_error(tmp_path):
    """Regression: `bench --unix PATH HOST` ignored HOST without a word."""
    result = run_tcpkit("bench", "--unix", tmp_path / "s.sock", "127.0.0.1", "-d", DURATION, timeout=RUN_TIMEOUT)
    assert result.returncode == 2, describe(result)
    assert "--unix" in result.stderr and "HOST '127.0.0.1' both name a target: give one of them" in result.stderr


class EchoesAndTells:
    """Echoes one connection; `echoed` is set once a reply has gone back."""

    def __init__(self):
        self.echoed = threading.Event()
        self.server = PeerServer(self._echo)

    def _echo(self, conn):
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
                self.echoed.set()
        except (ConnectionResetError, BrokenPipeError):
            pass


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM])
def test_regression_a_stop_signal_ends_the_run_with_the_report_of_what_was_measured(tmp_path, signo):
    """Regression: Ctrl-C (or SIGTERM) killed the run, printed nothing of
    what had been measured, and left the --output file empty. Now it ends
    the run there, as its duration would, writes the report (it says it was
    interrupted) and exits 128 + the signal, as wrk and iperf print theirs."""
    out = tmp_path / "report.json"
    out.write_text("an older report\n")
    peer = EchoesAndTells()
    with peer.server:
        proc = subprocess.Popen([str(tcpkit_path()), "bench", "127.0.0.1", str(peer.server.port), "-d", "300",
                                 "-s", "16", "--format", "json", "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert peer.echoed.wait(scaled(10)), "no message came"
            time.sleep(0.3)  # measuring starts once every connection is up
            proc.send_signal(signo)
            stdout, stderr = proc.communicate(timeout=scaled(RUN_TIMEOUT))
        finally:
            proc.kill()
    name = signal.Signals(signo).name
    assert proc.returncode == 128 + signo, (proc.returncode, stderr)
    report = json.loads(out.read_text())
    assert report["interrupted"] == name, report
    assert report["messages"] > 0 and report["duration_s"] < 300, report
    assert f"tcpkit bench: interrupted by {name} after" in stderr, stderr
    assert stdout == ""


def test_regression_an_unknown_host_is_named_once():
    """Regression: "cannot resolve 'x.invalid': resolve 'x.invalid': host
    name not found" said the name twice; connect's words now."""
    result = run_tcpkit("bench", "no-such-host.invalid", "80", "-d", DURATION, timeout=RUN_TIMEOUT)
    assert result.returncode == 1, describe(result)
    assert result.stderr == ("tcpkit bench: cannot resolve 'no-such-host.invalid': no such host (check the "
                             "spelling, or give an IP address)\n"), result.stderr


@pytest.mark.skipif(not private_hosts_file_works(),
                    reason="a private /etc/hosts needs unshare -m and mount --bind (root)")
def test_regression_a_name_is_measured_at_the_first_of_its_addresses_that_answers(
        tcpkit_process, tmp_path):
    # Only the first address of a name was tried: "localhost" as ::1 and
    # 127.0.0.1, against a server on one of them, failed when the other came
    # first, where wrk (and tcpkit connect) go on to the next.
    _server, port = start_serve(tcpkit_process, "--host", "127.0.0.2", "--mode", "echo", "--quiet")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 twohost\n127.0.0.2 twohost\n")
    script = ('mount --bind "$1" /etc/hosts && '
              'exec "$2" bench twohost "$3" -d 0.3 -s 16')
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(hosts),
                             str(tcpkit_path()), str(port)],
                            capture_output=True, text=True, timeout=scaled(RUN_TIMEOUT))
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith(f"tcpkit bench pingpong 127.0.0.2:{port}: "), result.stdout

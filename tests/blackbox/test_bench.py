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
import re
import resource
import socket
import time
from pathlib import Path

import pytest

from conftest import PeerServer, pick_free_port, run_tcpkit
from serve_util import recv_exact, start_serve
from tls_util import make_cert

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

DURATION = "0.5"
# A whole run: connect phase + DURATION + teardown, with room for a busy machine.
RUN_TIMEOUT = 30

REPORT_FIELDS = {"mode", "conns", "size", "threads", "rate", "duration_s", "messages", "bytes", "mib_per_s",
                 "msgs_per_s", "connections", "connections_per_s", "connected_at_start", "latency_us", "errors",
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
    assert time.monotonic() - started < 3, "a usage error should not run the benchmark"


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

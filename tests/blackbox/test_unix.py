"""Black-box tests of Unix-domain sockets in every subcommand: serve (every
mode) on a socket file with socat, nc -U and Python's AF_UNIX as peers;
connect, relay in both directions, bench and port; the socket file's life
(permissions, a live path refused, a stale file replaced, a non-socket kept,
the file removed on a clean stop); peer credentials in the log; abstract
sockets. Every socket lives in a temporary directory of the test's own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, run_tcpkit, scaled, wait_until
from serve_util import recv_exact, recv_line, recv_until_eof, wait_log

LISTENING_UNIX_RE = r"listening on unix:(?P<path>\S+) \(mode (?P<mode>\w+)"


def start_unix_serve(tcpkit_process, path, *args):
    """`tcpkit serve --unix PATH ARGS...`, once it listens."""
    server = tcpkit_process("serve", "--unix", path, *args)
    server.wait_for_line(LISTENING_UNIX_RE, stream="stdout")
    return server


def unix_client(path: str | bytes) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(scaled(DEFAULT_TIMEOUT))
    client.connect(path)
    return client


def send_all_then_read(client: socket.socket, data: bytes) -> bytes:
    """Sends `data` from a thread while reading (so neither side's buffers
    fill up), half-closes, and returns everything read until EOF."""
    writer = threading.Thread(target=lambda: (client.sendall(data), client.shutdown(socket.SHUT_WR)))
    writer.start()
    received, ending = recv_until_eof(client)
    writer.join()
    assert ending is None, f"the connection ended with {ending}, not an orderly EOF"
    return received


def assert_echoes_a_mebibyte(client: socket.socket) -> None:
    """1 MiB of random bytes out and, through some echo, back byte-exact."""
    payload = os.urandom(1024 * 1024)
    assert send_all_then_read(client, payload) == payload


@pytest.fixture
def sock_dir(tmp_path) -> Path:
    # sun_path holds 107 bytes: pytest's tmp_path can be longer than that.
    short = Path(subprocess.run(["mktemp", "-d", "/tmp/tcpkit-unix-XXXXXX"], capture_output=True,
                                text=True, check=True).stdout.strip())
    yield short
    subprocess.run(["rm", "-rf", str(short)], check=True)


# ---- serve, every mode ---------------------------------------------------------------------------

def test_echo_returns_one_mebibyte_byte_exact_and_logs_credentials(tcpkit_process, sock_dir):
    path = str(sock_dir / "echo.sock")
    server = start_unix_serve(tcpkit_process, path, "--mode", "echo")
    with unix_client(path) as client:
        assert_echoes_a_mebibyte(client)
    wait_log(server, rf"connect unix:{re.escape(path)} \(pid {os.getpid()}, uid {os.getuid()}\) \(clients: 1\)")


def test_ack_answers_socat(tcpkit_process, sock_dir):
    path = str(sock_dir / "ack.sock")
    server = start_unix_serve(tcpkit_process, path, "--mode", "ack", "--reply", "got it")
    result = subprocess.run(["socat", "-t", "5", "-", f"UNIX-CONNECT:{path}"], input=b"hello\n",
                            capture_output=True, timeout=scaled(DEFAULT_TIMEOUT))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"got it"
    wait_log(server, r"hello")


def test_discard_reads_everything_nc_sends(tcpkit_process, sock_dir):
    path = str(sock_dir / "discard.sock")
    server = start_unix_serve(tcpkit_process, path, "--mode", "discard")
    data = os.urandom(256 * 1024)
    result = subprocess.run(["nc", "-N", "-U", path], input=data, capture_output=True,
                            timeout=scaled(DEFAULT_TIMEOUT))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    wait_log(server, r"disconnect unix:\S+ \(pid \d+, uid \d+\): peer closed")


def test_chat_passes_lines_between_unix_clients(tcpkit_process, sock_dir):
    path = str(sock_dir / "chat.sock")
    start_unix_serve(tcpkit_process, path, "--mode", "chat")
    with unix_client(path) as alice, unix_client(path) as bob:
        alice_buf, bob_buf = bytearray(), bytearray()
        alice.sendall(b"/nick alice\n")
        bob.sendall(b"/nick bob\n")
        # Each hears the other's arrival; wait until bob's name is in.
        wait_until(lambda: b"bob" in recv_line(alice, alice_buf))
        alice.sendall(b"hello over a socket file\n")
        wait_until(lambda: b"hello over a socket file" in recv_line(bob, bob_buf))


def test_abstract_socket_serves_without_a_file(tcpkit_process, sock_dir):
    name = f"tcpkit-test-{os.getpid()}"
    server = start_unix_serve(tcpkit_process, f"@{name}", "--mode", "echo")
    with unix_client(b"\0" + name.encode()) as client:
        assert send_all_then_read(client, b"abstract\n") == b"abstract\n"
    assert list(sock_dir.iterdir()) == []
    assert server.returncode is None


# ---- connect, relay, bench, port -----------------------------------------------------------------

def test_connect_unix_path_and_unix_flag(tcpkit_process, sock_dir):
    path = str(sock_dir / "c.sock")
    start_unix_serve(tcpkit_process, path, "--mode", "echo")
    for target in (["unix:" + path], ["--unix", path]):
        result = run_tcpkit("connect", *target, "--send", "ping")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "ping\n"


def test_connect_to_a_missing_socket_says_so():
    result = run_tcpkit("connect", "unix:/nonexistent-dir/x.sock", "--send", "x")
    assert result.returncode == 1
    assert "unix:/nonexistent-dir/x.sock" in result.stderr
    assert "no such socket file" in result.stderr


def test_connect_unix_with_a_port_is_a_usage_error():
    result = run_tcpkit("connect", "unix:/tmp/x.sock", "80")
    assert result.returncode == 2
    assert "no PORT" in result.stderr


def test_relay_unix_to_tcp_is_byte_exact(tcpkit_process, sock_dir):
    upstream = tcpkit_process("serve", "--port", 0, "--mode", "echo")
    port = int(upstream.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    path = str(sock_dir / "relay.sock")
    relay = tcpkit_process("relay", "--listen", f"unix:{path}", "--to", f"127.0.0.1:{port}")
    relay.wait_for_line(rf"listening on unix:{re.escape(path)}, forwarding to 127\.0\.0\.1:{port}")
    with unix_client(path) as client:
        assert_echoes_a_mebibyte(client)
    wait_log(relay, rf"connect unix:{re.escape(path)} \(pid {os.getpid()}, uid \d+\) -> 127\.0\.0\.1:{port}")


def test_relay_tcp_to_unix_is_byte_exact(tcpkit_process, sock_dir):
    path = str(sock_dir / "upstream.sock")
    start_unix_serve(tcpkit_process, path, "--mode", "echo")
    relay = tcpkit_process("relay", "--listen", "127.0.0.1:0", "--to", f"unix:{path}")
    port = int(relay.wait_for_line(r"listening on 127\.0\.0\.1:(\d+), forwarding to unix:").group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(DEFAULT_TIMEOUT)) as client:
        assert_echoes_a_mebibyte(client)


@pytest.mark.parametrize("mode", ["pingpong", "stream", "connrate"])
def test_bench_against_a_unix_echo_server(tcpkit_process, sock_dir, mode):
    path = str(sock_dir / "bench.sock")
    start_unix_serve(tcpkit_process, path, "--mode", "echo", "--quiet")
    result = run_tcpkit("bench", "--unix", path, "--mode", mode, "--conns", "4", "--duration", "0.5",
                        "--format", "json", timeout=30)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["messages"] > 0, report
    assert report["errors"]["mismatched_bytes"] == 0, report


def test_bench_unix_path_as_host(tcpkit_process, sock_dir):
    path = str(sock_dir / "bench.sock")
    start_unix_serve(tcpkit_process, path, "--mode", "echo", "--quiet")
    result = run_tcpkit("bench", f"unix:{path}", "--conns", "2", "--duration", "0.3", timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"unix:{path}" in result.stdout


def test_port_explains_a_unix_socket(tcpkit_process, sock_dir):
    path = str(sock_dir / "port.sock")
    server = start_unix_serve(tcpkit_process, path, "--mode", "echo")
    with unix_client(path) as a, unix_client(path) as b:
        for client in (a, b):
            client.sendall(b"x")
            assert recv_exact(client, 1) == b"x"
        for target in (f"unix:{path}", path):
            result = run_tcpkit("port", target)
            assert result.returncode == 0, result.stderr
            assert f"Unix socket unix:{path}" in result.stdout
            assert re.search(rf"unix:{re.escape(path)}\s+pid {server.pid} \(tcpkit\)", result.stdout), result.stdout
            assert "Connections open: 2" in result.stdout
        js = run_tcpkit("port", f"unix:{path}", "--json")
        report = json.loads(js.stdout)
        assert [l["pid"] for l in report["listeners"]] == [server.pid], report
        assert report["connections"] == 2 and report["unix"] == f"unix:{path}", report


def test_port_on_a_path_nobody_serves():
    result = run_tcpkit("port", "unix:/nonexistent-dir/x.sock")
    assert result.returncode == 0, result.stderr
    assert "nobody is listening on unix:/nonexistent-dir/x.sock" in result.stdout
    assert "Connections open: 0" in result.stdout


# ---- the socket file -----------------------------------------------------------------------------

def test_unix_mode_sets_the_permissions(tcpkit_process, sock_dir):
    path = sock_dir / "mode.sock"
    start_unix_serve(tcpkit_process, str(path), "--unix-mode", "600")
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600


def test_relay_unix_mode(tcpkit_process, sock_dir):
    path = sock_dir / "relay-mode.sock"
    relay = tcpkit_process("relay", "--listen", f"unix:{path}", "--to", "127.0.0.1:9", "--unix-mode", "640")
    relay.wait_for_line(r"listening on unix:")
    assert stat.S_IMODE(path.lstat().st_mode) == 0o640


def test_bad_unix_mode_is_a_usage_error():
    result = run_tcpkit("serve", "--unix", "/tmp/x.sock", "--unix-mode", "999")
    assert result.returncode == 2
    assert "999" in result.stderr


def test_a_live_path_is_refused_naming_the_holder(tcpkit_process, sock_dir):
    path = str(sock_dir / "live.sock")
    first = start_unix_serve(tcpkit_process, path)
    result = run_tcpkit("serve", "--unix", path)
    assert result.returncode == 1
    assert path in result.stderr
    assert f"pid {first.pid}" in result.stderr
    assert f"tcpkit port unix:{path}" in result.stderr
    # The first server still serves.
    with unix_client(path):
        pass


def test_a_stale_file_is_replaced_and_logged(tcpkit_process, sock_dir):
    path = str(sock_dir / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, as after a crash
    server = tcpkit_process("serve", "--unix", path, "--mode", "echo")
    server.wait_for_line(rf"replacing stale socket file {re.escape(path)}", stream="stdout")
    server.wait_for_line(LISTENING_UNIX_RE, stream="stdout")
    with unix_client(path) as client:
        assert send_all_then_read(client, b"fresh") == b"fresh"


def test_a_path_that_is_not_a_socket_is_refused_and_kept(sock_dir):
    path = sock_dir / "notes.txt"
    path.write_text("keep me")
    result = run_tcpkit("serve", "--unix", str(path))
    assert result.returncode == 1
    assert "not a socket" in result.stderr and str(path) in result.stderr
    assert path.read_text() == "keep me"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_file_is_removed_on_a_clean_stop(tcpkit_process, sock_dir, signum):
    # Regression, SIGHUP (the terminal that ran the server went away): the
    # default action killed the server and left the file behind.
    path = sock_dir / "bye.sock"
    server = start_unix_serve(tcpkit_process, str(path))
    assert path.exists()
    server.signal(signum)
    assert server.wait() == 0
    assert not path.exists()


def test_a_too_long_path_is_a_clear_usage_error():
    result = run_tcpkit("serve", "--unix", "/tmp/" + "a" * 120)
    assert result.returncode == 2
    assert "at most 107 fit" in result.stderr


# ---- TLS over a Unix socket: the layer does not care what carries it --------------------------

def test_tls_over_a_unix_socket_with_python_ssl_and_tcpkit_connect(tcpkit_process, sock_dir, tmp_path):
    import ssl
    from tls_util import make_cert
    cert, key = make_cert(tmp_path)
    path = str(sock_dir / "tls.sock")
    server = start_unix_serve(tcpkit_process, path, "--mode", "echo", "--tls-cert", cert, "--tls-key", key)
    context = ssl.create_default_context(cafile=cert)
    with context.wrap_socket(unix_client(path), server_hostname="localhost") as client:
        # One thread: an SSL socket is not to be read and written at once.
        for _ in range(16):
            piece = os.urandom(16 * 1024)
            client.sendall(piece)
            assert recv_exact(client, len(piece)) == piece
    wait_log(server, rf"tls unix:{re.escape(path)} \(pid {os.getpid()}, uid {os.getuid()}\): TLSv1\.3 ")
    result = run_tcpkit("connect", "--unix", path, "--tls", "--tls-ca", cert, "--sni", "localhost",
                        "--send", "over TLS over a Unix socket")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "over TLS over a Unix socket\n"


# Regression: `--unix ''` read as no --unix at all, so `serve --unix ''`
# served TCP on 127.0.0.1:8888 instead of refusing, and `serve --unix @`
# failed at run time as "not an IPv4 or IPv6 address".
@pytest.mark.parametrize("subcommand", ["serve", "bench", "connect"])
@pytest.mark.parametrize("path", ["", "@"])
def test_regression_an_empty_unix_flag_is_a_usage_error(subcommand, path):
    try:
        result = run_tcpkit(subcommand, "--unix", path, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tcpkit {subcommand} --unix '{path}'` ran instead of refusing the flag")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "the socket path is missing: give --unix PATH" in result.stderr, result.stderr
    assert "listening" not in result.stdout + result.stderr

"""Black-box tests of `tcpkit serve --tls-cert FILE --tls-key FILE`: round
trips with real TLS clients (openssl s_client, socat OPENSSL, Python's ssl
module and `tcpkit connect --tls`), every mode, many clients on two threads,
TLS after a PROXY header, clients that fail the handshake (with the others
still served), the flag errors, and logs that never show the plaintext.

The certificate is made per test module with the openssl program:
self-signed, for localhost and 127.0.0.1."""

import hashlib
import json
import os
import random
import re
import select
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from conftest import DEFAULT_TIMEOUT, scaled, run_tcpkit, wait_until
from serve_util import DEFAULT_REPLY, connect, count_lines, recv_exact, recv_line, recv_until_eof, start_serve, \
    wait_log
from tls_util import client_context, make_cert, plaintext_client_until_closed, read_to_tls_end, send_and_cut, \
    tls_connect

# Timeouts stretch for a sanitizer build (TCPKIT_TIMEOUT_SCALE).
TIMEOUT = scaled(DEFAULT_TIMEOUT)

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

SECRET = "the-plaintext-that-must-not-be-logged"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls-serve"))


def serve_tls(tcpkit_process, cert, *args):
    crt, key = cert
    return start_serve(tcpkit_process, "--tls-cert", crt, "--tls-key", key, *args)


def log_text(server) -> str:
    return "\n".join(server.stdout_lines + server.stderr_lines)


def s_client_exchange(port: int, ca_file: str, send: bytes, expect: int, *args) -> tuple[bytes, int]:
    """openssl s_client sends `send`, reads `expect` bytes of reply, then
    closes (stdin ends only after the reply, or s_client would leave at
    once). Returns (reply, exit code)."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", ca_file,
                             "-verify_return_error", "-quiet", "-no_ign_eof", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(send)
        proc.stdin.flush()
        reply = bytearray()
        deadline = time.monotonic() + TIMEOUT
        while len(reply) < expect:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                break
            reply += chunk
        proc.stdin.close()
        proc.wait(TIMEOUT)
        return bytes(reply), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- real clients ----------------------------------------------------------------------------

def test_s_client_gets_the_ack_and_the_log_has_no_plaintext(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert)
    assert "with TLS (certificate" in server.stdout_lines[0]
    reply, code = s_client_exchange(port, cert[0], (SECRET + "\n").encode(), len(DEFAULT_REPLY.encode()),
                                    "-servername", "localhost")
    assert reply.decode() == DEFAULT_REPLY
    assert code == 0
    wait_log(server, r"tls 127\.0\.0\.1:\d+: TLSv1\.3 \S+ \(server name localhost\)")
    wait_log(server, r"message from 127\.0\.0\.1:\d+: 38 bytes \(TLS: text not logged\)")
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: peer closed \(clients: 0\)")
    assert SECRET not in log_text(server)


def test_regression_a_fin_without_close_notify_is_logged_as_truncated(tcpkit_process, cert):
    """A client's FIN without close_notify still gets its replies and a clean
    TLS end, but the log says that what it sent may be cut short, where it
    said "peer closed" as for a clean end."""
    server, port = serve_tls(tcpkit_process, cert, "--mode", "echo")
    assert send_and_cut(port, cert[0], b"cut short") == (b"cut short", "close_notify")
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: peer closed without TLS close_notify \(truncated\) "
                     r"\(clients: 0\)")


def test_s_client_with_tls_1_2(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert, "--mode", "echo")
    reply, code = s_client_exchange(port, cert[0], b"over tls 1.2\n", 13, "-tls1_2")
    assert reply == b"over tls 1.2\n"
    assert code == 0
    wait_log(server, r"tls 127\.0\.0\.1:\d+: TLSv1\.2 ")


def test_socat_echoes_a_megabyte_byte_exact(tcpkit_process, cert):
    if shutil.which("socat") is None:
        pytest.fail("socat is needed (scripts/install-deps installs it)")
    _, port = serve_tls(tcpkit_process, cert, "--mode", "echo", "--quiet")
    payload = random.Random(7).randbytes(1 << 20)
    # socat sends its input, shuts down its write side with close_notify, and
    # keeps reading until the server's echo ends.
    result = subprocess.run(["socat", "-t", "10", "STDIO",
                             f"OPENSSL:127.0.0.1:{port},cafile={cert[0]},commonname=localhost"],
                            input=payload, capture_output=True, timeout=TIMEOUT * 2)
    assert result.returncode == 0, result.stderr.decode()
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_tcpkit_connect_line_framing(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert, "--framing", "line", "--reply", "ok")
    result = run_tcpkit("connect", "--tls", "--tls-ca", cert[0], "127.0.0.1", port, "--line",
                        "--send", "one", "--send", "two")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\nok\n"
    # The log is read by another thread than the client's exit: wait for it
    # (a check made at once missed the lines on a loaded machine).
    logged = r"message from .*: 3 bytes \(TLS: text not logged\)"
    wait_until(lambda: count_lines(server, logged) >= 2, message="the two messages' log lines")
    assert count_lines(server, logged) == 2


def test_many_clients_on_two_threads_byte_exact(tcpkit_process, cert):
    _, port = serve_tls(tcpkit_process, cert, "--mode", "echo", "--threads", "2", "--quiet")
    errors: list[str] = []

    def client(seed: int) -> None:
        try:
            rng = random.Random(seed)
            with tls_connect(port, cert[0]) as sock:
                for _ in range(20):
                    data = rng.randbytes(rng.randint(1, 40_000))
                    sock.sendall(data)
                    if recv_exact(sock, len(data)) != data:
                        errors.append(f"client {seed}: echo differs")
                        return
        except Exception as exc:  # noqa: BLE001 - reported below with the client's number
            errors.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 4)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_chat_lines_reach_the_other_tls_member(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert, "--mode", "chat", "--threads", "2")
    alice, bob = tls_connect(port, cert[0]), tls_connect(port, cert[0])
    with alice, bob:
        alice_buf, bob_buf = bytearray(), bytearray()
        # Each is a member once the other hears of it.
        assert b"joined" in recv_line(alice, alice_buf)
        alice.sendall(b"/nick alice\nhello bob\n")
        assert recv_line(bob, bob_buf).endswith(b" is now known as alice")
        assert recv_line(bob, bob_buf) == b"<alice> hello bob"
    wait_log(server, r"disconnect .*\(clients: 0\)")


def test_a_paced_tls_member_that_ends_has_its_waiting_lines_said_before_it_leaves(tcpkit_process,
                                                                                  cert):
    """Flood control over TLS: a member over its rate (--chat-rate 100, 300
    lines) whose close_notify comes right behind its lines still has every
    line said to the room, in order, before the others hear it left."""
    server, port = serve_tls(tcpkit_process, cert, "--mode", "chat", "--chat-rate", "100")
    flooder = tls_connect(port, cert[0])
    listener = tls_connect(port, cert[0])
    with listener:
        flooder_buf, listener_buf = bytearray(), bytearray()
        assert b"joined" in recv_line(flooder, flooder_buf)
        name = "{}:{}".format(*flooder.getsockname()[:2])
        flooder.sendall(b"".join(b"%03d over tls\n" % k for k in range(300)))
        # close_notify; unwrap() then waits for the server's, which comes
        # once the member's lines are all said.
        flooder.unwrap().close()
        for k in range(300):
            assert recv_line(listener, listener_buf) == f"<{name}> {k:03d} over tls".encode()
        assert recv_line(listener, listener_buf) == f"* {name} left".encode()
    wait_log(server, r"disconnect .*\(clients: 0\)")


def test_proxy_header_comes_before_the_handshake(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert, "--proxy-protocol", "--trusted-proxy", "127.0.0.1/32")
    header = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n"
    with tls_connect(port, cert[0], preamble=header) as sock:
        sock.sendall(b"hi")
        assert recv_exact(sock, len(DEFAULT_REPLY.encode())) == DEFAULT_REPLY.encode()
    wait_log(server, r"connect 203\.0\.113\.9:40000 via 127\.0\.0\.1:\d+")
    wait_log(server, r"tls 203\.0\.113\.9:40000: TLSv1\.3")
    wait_log(server, r"message from 203\.0\.113\.9:40000: 2 bytes")


# --- clients that fail -----------------------------------------------------------------------

def test_plain_client_is_closed_with_the_reason_and_others_are_served(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert, "--mode", "echo")
    with tls_connect(port, cert[0]) as good:
        plaintext_client_until_closed(port)
        wait_log(server, r"disconnect 127\.0\.0\.1:\d+: TLS handshake failed \(.+\) \(clients: 1\)")
        good.sendall(b"still here")
        assert recv_exact(good, 10) == b"still here"


def test_client_that_never_finishes_the_handshake_is_closed(tcpkit_process, cert):
    server, port = serve_tls(tcpkit_process, cert, "--mode", "echo", "--tls-handshake-timeout", "0.5")
    with tls_connect(port, cert[0]) as good:
        with connect(port) as silent:  # connects and never sends a hello
            data, _how = recv_until_eof(silent, timeout=TIMEOUT)
            assert data == b""
        wait_log(server, r"disconnect 127\.0\.0\.1:\d+: TLS handshake timeout \(0\.5 s\) \(clients: 1\)")
        # The finished handshake stopped its own timer: still served, well past 0.5 s.
        good.sendall(b"after the timeout")
        assert recv_exact(good, 17) == b"after the timeout"


def test_client_that_rejects_the_certificate_is_logged(tcpkit_process, cert, tmp_path):
    server, port = serve_tls(tcpkit_process, cert)
    other_ca, _ = make_cert(tmp_path, name="other")
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", other_ca,
                             "-verify_return_error", "-quiet", "-no_ign_eof"],
                            input=b"x\n", capture_output=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert result.stdout == b""
    # The client's alert names its reason: our certificate is from an unknown CA.
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: TLS handshake failed \(.*unknown ca.*\)")
    assert count_lines(server, r"message from") == 0


@pytest.mark.parametrize("backend", ["epoll", "uring"])
def test_data_before_a_forged_record_is_served_and_the_close_is_a_tls_error(tcpkit_process, cert, backend):
    """After the handshake one send carries a good record and a forged one:
    the good record's bytes reach the server, and the close is logged as a
    TLS error. It was logged as a failed handshake, and the bytes dropped."""
    server, port = serve_tls(tcpkit_process, cert, "--io-backend", backend)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(cert[0]).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with connect(port) as raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                assert data, "the server closed during the handshake"
                incoming.write(data)
        raw.sendall(outgoing.read())
        wait_log(server, r"tls 127\.0\.0\.1:\d+: TLSv1\.3 ")
        tls.write(os.urandom(1000))
        # An application-data record header, then 16 bytes no key made.
        raw.sendall(outgoing.read() + b"\x17\x03\x03\x00\x10" + os.urandom(16))
        wait_log(server, r"message from 127\.0\.0\.1:\d+: 1000 bytes \(TLS: text not logged\)")
        wait_log(server, r"disconnect 127\.0\.0\.1:\d+: TLS error \(.*bad record mac.*\) \(clients: 0\)")
    assert count_lines(server, r"TLS handshake failed") == 0


def test_regression_idle_timeout_and_message_too_large_end_with_close_notify(tcpkit_process, cert):
    """Closes the server decides end TLS with close_notify, so that the
    client reads a clean end. They were a FIN alone, which a TLS client must
    take for a possible truncation (tcpkit connect exited 1, openssl said
    "unexpected eof"). Both backends: ctest runs this module on each."""
    server, port = serve_tls(tcpkit_process, cert, "--framing", "line", "--reply", "ok",
                             "--max-message", "100", "--idle-timeout", "0.5")
    with tls_connect(port, cert[0], suppress_ragged_eofs=False) as idle:
        assert read_to_tls_end(idle) == (b"", "close_notify")
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: idle timeout")
    with tls_connect(port, cert[0], suppress_ragged_eofs=False) as big:
        big.sendall(b"a\n" + b"x" * 300 + b"\n")
        assert read_to_tls_end(big) == (b"ok\n", "close_notify")
    wait_log(server, r"disconnect 127\.0\.0\.1:\d+: message too large")
    # tcpkit's own client reads it as the server's end, not as a cut.
    result = run_tcpkit("connect", "--tls", "--tls-ca", cert[0], "localhost", port, "--wait", "5",
                        input="a\n" + "x" * 300 + "\n")
    assert result.returncode == 0, result.stderr
    assert "close_notify" not in result.stderr


# --- flags -----------------------------------------------------------------------------------

def test_cert_without_key_is_a_usage_error(cert):
    result = run_tcpkit("serve", "--port", "0", "--tls-cert", cert[0])
    assert result.returncode == 2
    assert "--tls-cert requires --tls-key" in result.stderr


def test_missing_file_is_named(cert, tmp_path):
    result = run_tcpkit("serve", "--port", "0", "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", cert[1])
    assert result.returncode == 2
    assert "nope.pem" in result.stderr


def test_key_that_does_not_match_is_a_clear_error(cert, tmp_path):
    _, other_key = make_cert(tmp_path, name="other")
    result = run_tcpkit("serve", "--port", "0", "--tls-cert", cert[0], "--tls-key", other_key)
    assert result.returncode == 1
    assert re.search(r"tcpkit serve: .*key.*", result.stderr), result.stderr
    assert "listening" not in result.stdout
    # The key's contents never reach the terminal.
    with open(other_key) as f:
        body = [line for line in f.read().splitlines() if not line.startswith("-----")]
    assert not any(line in result.stderr for line in body if line)


def test_key_file_contents_never_in_the_log(tcpkit_process, cert):
    crt, key = cert
    server = tcpkit_process("serve", "--port", 0, "--tls-cert", crt, "--tls-key", key, "--log-format", "json")
    listening = json.loads(server.wait_for_line(r'"event": ?"listening"', stream="stdout").string)
    assert listening["tls"] == "on"
    port = int(listening["address"].rsplit(":", 1)[1])
    with tls_connect(port, cert[0]) as sock:
        sock.sendall(SECRET.encode())
        recv_exact(sock, len(DEFAULT_REPLY.encode()))
    wait_log(server, r'"event": ?"disconnect"')
    with open(cert[1]) as f:
        key_lines = [line for line in f.read().splitlines() if line and not line.startswith("-----")]
    text = log_text(server)
    assert SECRET not in text
    assert not any(line in text for line in key_lines)
    assert os.path.basename(cert[1]) not in text  # not even the key's file name


# --- hostile server names (design decision 10) ------------------------------------------------

def test_server_name_cannot_forge_a_log_line_or_reach_the_terminal(tcpkit_process, cert):
    """Regression: the SNI was logged raw, so a newline in it wrote a forged
    line and an ESC sequence reached the operator's terminal."""
    server, port = serve_tls(tcpkit_process, cert)
    forged = "2026-01-01T00:00:00.000 connect 10.9.9.9:1 (clients: 1)"
    reply, _ = s_client_exchange(port, cert[0], b"hi\n", len(DEFAULT_REPLY.encode()),
                                 "-servername", f"x\n{forged}\x1b[31m\\x41")
    assert reply.decode() == DEFAULT_REPLY
    wait_log(server, r"tls 127\.0\.0\.1:\d+: .*\(server name ")
    shown = [text for text in server.stdout_lines if "(server name " in text][0]
    # One line, the controls escaped, a typed backslash told apart from an escape.
    assert shown.endswith(f"(server name x\\n{forged}\\x1b[31m\\\\x41)"), shown
    assert not any(text.startswith(forged) for text in server.stdout_lines)
    assert not any("\x1b" in text for text in server.stdout_lines)


def test_server_name_of_invalid_utf8_keeps_the_json_log_valid(tcpkit_process, cert):
    """Regression: JSON lines passed invalid UTF-8 through, so no JSON
    parser could read the log."""
    crt, key = cert
    server = tcpkit_process("serve", "--port", 0, "--tls-cert", crt, "--tls-key", key, "--log-format", "json")
    listening = json.loads(server.wait_for_line(r'"event": ?"listening"', stream="stdout").string)
    port = int(listening["address"].rsplit(":", 1)[1])
    reply, _ = s_client_exchange(port, cert[0], b"hi\n", len(DEFAULT_REPLY.encode()),
                                 "-servername", b"a\xff\xfeb\x1b[31m")
    assert reply.decode() == DEFAULT_REPLY
    wait_log(server, r'"event": ?"tls"')
    tls = [json.loads(text) for text in server.stdout_lines if re.search(r'"event": ?"tls"', text)]
    assert tls[0]["server_name"] == "a\ufffd\ufffdb\x1b[31m"
    for text in server.stdout_lines:
        json.loads(text)

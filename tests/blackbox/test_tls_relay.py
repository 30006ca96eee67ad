"""Black-box tests of TLS on either side of `tcpkit relay`: --tls-cert/--tls-key
(clients speak TLS to the relay, which forwards plaintext: a TLS terminator)
and --to-tls (the relay speaks TLS to the upstream), each with real peers —
socat OPENSSL as client and as server, openssl s_client, Python's ssl module
and `tcpkit serve --tls-cert`. Faults still apply to the plaintext; failed
handshakes end the pair with the reason; other pairs keep being served.

The certificate is made per test module with the openssl program:
self-signed, for localhost and 127.0.0.1."""

import hashlib
import random
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import DEFAULT_TIMEOUT, scaled, pick_free_port, run_tcpkit, wait_for_listener
from serve_util import connect, recv_exact, recv_until_eof, start_serve, wait_log
from test_relay import RELAY_LISTENING_RE
from tls_util import fin_without_close_notify, make_cert, plaintext_client_until_closed, read_to_tls_end, \
    send_and_cut, tls_connect

# Timeouts stretch for a sanitizer build (TCPKIT_TIMEOUT_SCALE).
TIMEOUT = scaled(DEFAULT_TIMEOUT)

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls-relay"))


def start_relay(tcpkit_process, to: str, *args):
    relay = tcpkit_process("relay", "--listen", "127.0.0.1:0", "--to", to, *args)
    match = relay.wait_for_line(RELAY_LISTENING_RE, stream="stdout")
    return relay, int(match.group("port"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def socat_tls_echo(cert):
    """socat's TLS server echoing with cat, one process per connection."""
    if shutil.which("socat") is None:
        pytest.fail("socat is needed (scripts/install-deps installs it)")
    port = pick_free_port()
    crt, key = cert
    proc = subprocess.Popen(["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={crt},"
                             f"key={key},verify=0", "EXEC:cat"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_listener(port)
    yield port
    proc.kill()
    proc.wait()


def plain_echo(port: int, data: bytes) -> bytes:
    """Sends `data` from a thread while reading the echo; returns the echo."""
    with connect(port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
        sender.start()
        echo = recv_exact(sock, len(data), timeout=TIMEOUT * 3)
        sender.join(TIMEOUT)
        return echo


# --- TLS from clients (a terminator in front of a plain server) ------------------------------

def test_terminator_socat_client_megabyte_byte_exact(tcpkit_process, cert):
    _, upstream = start_serve(tcpkit_process, "--mode", "echo", "--quiet")
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{upstream}", "--tls-cert", cert[0],
                              "--tls-key", cert[1])
    assert relay.stdout_lines[0].endswith("(TLS -> TCP)")
    payload = random.Random(3).randbytes(1 << 20)
    # socat ends its half with close_notify; the relay passes it on as FIN,
    # and the echo's end comes back as close_notify: socat then exits.
    result = subprocess.run(["socat", "-t", "10", "STDIO",
                             f"OPENSSL:127.0.0.1:{port},cafile={cert[0]},commonname=localhost"],
                            input=payload, capture_output=True, timeout=TIMEOUT * 3)
    assert result.returncode == 0, result.stderr.decode()
    assert sha(result.stdout) == sha(payload)
    wait_log(relay, rf"disconnect 127\.0\.0\.1:\d+: closed by client \(bytes up {len(payload)}, "
                    rf"down {len(payload)}\)")


def test_terminator_with_one_byte_chunks_keeps_framing(tcpkit_process, cert):
    _, upstream = start_serve(tcpkit_process, "--framing", "line", "--reply", "ok", "--quiet")
    _, port = start_relay(tcpkit_process, f"127.0.0.1:{upstream}", "--tls-cert", cert[0],
                          "--tls-key", cert[1], "--chunk", "1")
    with tls_connect(port, cert[0]) as sock:
        sock.sendall(b"one\ntwo\nthree\n")
        assert recv_exact(sock, 9) == b"ok\nok\nok\n"


def test_plain_client_fails_the_handshake_and_others_are_served(tcpkit_process, cert):
    _, upstream = start_serve(tcpkit_process, "--mode", "echo", "--quiet")
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{upstream}", "--tls-cert", cert[0],
                              "--tls-key", cert[1])
    with tls_connect(port, cert[0]) as good:
        plaintext_client_until_closed(port)
        wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: client: TLS handshake failed \(.+\)")
        good.sendall(b"still served")
        assert recv_exact(good, 12) == b"still served"


def test_regression_idle_timeout_ends_the_client_with_close_notify(tcpkit_process, cert):
    """The relay's idle timeout ends a TLS client with close_notify, not a
    FIN alone that the client must take for a possible truncation."""
    _, upstream = start_serve(tcpkit_process, "--mode", "echo", "--quiet")
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{upstream}", "--tls-cert", cert[0],
                              "--tls-key", cert[1], "--idle-timeout", "0.5")
    with tls_connect(port, cert[0], suppress_ragged_eofs=False) as sock:
        sock.sendall(b"echo me")
        assert read_to_tls_end(sock) == (b"echo me", "close_notify")
    wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: .*idle timeout")


def test_regression_a_client_fin_without_close_notify_is_logged_as_truncated(tcpkit_process, cert):
    """A TLS client's FIN that comes without close_notify is passed on as a
    FIN (the echo still comes back, with a clean TLS end), but the log no
    longer calls it "closed by client": what the client sent may be cut short."""
    _, upstream = start_serve(tcpkit_process, "--mode", "echo", "--quiet")
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{upstream}", "--tls-cert", cert[0],
                              "--tls-key", cert[1])
    assert send_and_cut(port, cert[0], b"cut short") == (b"cut short", "close_notify")
    wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: client closed without TLS close_notify \(truncated\) "
                    r"\(bytes up 9, down 9\)")


# --- TLS to the upstream ---------------------------------------------------------------------

def tls_upstream_of_one(cert, reply: bytes, close_notify: bool) -> tuple[int, threading.Thread, list]:
    """A TLS server of one connection on a thread, with Python's ssl module:
    sends `reply`, then ends with close_notify (unwrap()) or with a FIN alone,
    and reads until the relay's end. Returns (port, thread, errors)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    errors = []

    def serve() -> None:
        try:
            with listener:
                raw, _ = listener.accept()
            raw.settimeout(TIMEOUT)
            with context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(reply)
                if close_notify:
                    tls.unwrap()
                else:
                    fin_without_close_notify(tls)
                while tls.recv(65536):
                    pass
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(repr(exc))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, errors


@pytest.mark.parametrize("close_notify, reason", [
    (False, r"upstream closed without TLS close_notify \(truncated\)"),
    (True, r"closed by upstream"),
])
def test_regression_an_upstream_fin_without_close_notify_is_logged_as_truncated(tcpkit_process, cert,
                                                                                close_notify, reason):
    """An upstream's FIN without close_notify (a truncation attack, or a
    crashed server) is passed on as a FIN after all it sent, and logged as a
    truncation, not as "closed by upstream" like a clean TLS end."""
    upstream, thread, errors = tls_upstream_of_one(cert, b"the reply, perhaps cut", close_notify)
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{upstream}", "--to-tls", "--to-ca", cert[0],
                              "--to-sni", "localhost")
    with connect(port) as sock:
        assert recv_until_eof(sock) == (b"the reply, perhaps cut", None)
    wait_log(relay, rf"disconnect 127\.0\.0\.1:\d+: {reason} \(bytes up 0, down 22\)")
    thread.join(TIMEOUT)
    assert errors == []


def test_originator_to_socat_tls_server_byte_exact(tcpkit_process, cert, socat_tls_echo):
    relay, port = start_relay(tcpkit_process, f"localhost:{socat_tls_echo}", "--to-tls", "--to-ca", cert[0])
    assert relay.stdout_lines[0].endswith("(TCP -> TLS)")
    payload = random.Random(4).randbytes(256 * 1024)
    assert sha(plain_echo(port, payload)) == sha(payload)


def test_originator_rejects_an_untrusted_upstream(tcpkit_process, cert, socat_tls_echo):
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{socat_tls_echo}", "--to-tls")
    with connect(port) as sock:
        sock.sendall(b"secret")
        assert sock.recv(100) == b""
    wait_log(relay, r"disconnect 127\.0\.0\.1:\d+: upstream: TLS handshake failed \(certificate verify "
                    r"failed: self-signed certificate\)")


def test_originator_insecure_accepts_it(tcpkit_process, socat_tls_echo):
    _, port = start_relay(tcpkit_process, f"127.0.0.1:{socat_tls_echo}", "--to-tls", "--to-insecure")
    assert plain_echo(port, b"encrypted, not authenticated") == b"encrypted, not authenticated"


def test_originator_checks_the_name(tcpkit_process, cert, socat_tls_echo):
    relay, port = start_relay(tcpkit_process, f"127.0.0.1:{socat_tls_echo}", "--to-tls", "--to-ca", cert[0],
                              "--to-sni", "other.example")
    with connect(port) as sock:
        sock.sendall(b"x")
        assert sock.recv(100) == b""
    wait_log(relay, r"upstream: TLS handshake failed \(certificate verify failed: [Hh]ostname mismatch\)")


def test_tls_on_both_sides_with_faults_to_tcpkit_serve(tcpkit_process, cert):
    server, upstream = start_serve(tcpkit_process, "--mode", "echo", "--tls-cert", cert[0], "--tls-key", cert[1])
    relay, port = start_relay(tcpkit_process, f"localhost:{upstream}", "--tls-cert", cert[0], "--tls-key", cert[1],
                              "--to-tls", "--to-ca", cert[0], "--chunk", "1000", "--delay", "1")
    assert relay.stdout_lines[0].endswith("(TLS -> TLS)")
    errors = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with tls_connect(port, cert[0]) as sock:
                for _ in range(5):
                    data = rng.randbytes(rng.randint(1, 20_000))
                    sock.sendall(data)
                    if recv_exact(sock, len(data), timeout=TIMEOUT * 3) != data:
                        errors.append(f"client {seed}: echo differs")
        except Exception as exc:  # noqa: BLE001 - reported with the client's number
            errors.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 6)
    assert errors == []
    wait_log(server, r"tls 127\.0\.0\.1:\d+: TLSv1\.3 \S+ \(server name localhost\)")


# --- flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--to-ca", "/etc/hostname"], "--to-ca requires --to-tls"),
    (["--to-insecure"], "--to-insecure requires --to-tls"),
    (["--to-sni", "x"], "--to-sni requires --to-tls"),
    (["--to-tls", "--to-insecure", "--to-ca", "/etc/hostname"], "excludes"),
])
def test_tls_flag_errors_exit_2(args, message):
    result = run_tcpkit("relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_tls_key_without_cert_exits_2(cert):
    result = run_tcpkit("relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--tls-key", cert[1])
    assert result.returncode == 2
    assert "--tls-key requires --tls-cert" in result.stderr


def test_bad_ca_file_is_named(tmp_path):
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not PEM\n")
    result = run_tcpkit("relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--to-tls", "--to-ca", str(bad))
    assert result.returncode == 1
    assert "not-a-ca.pem" in result.stderr, result.stderr

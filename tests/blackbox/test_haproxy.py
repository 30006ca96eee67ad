"""`tcpkit serve --proxy-protocol` behind a real HAProxy (mode tcp).

The HAProxy configuration and the systemd unit's command line are the ones
in docs/deploy.md, read from the document, with only the ports changed (and
`send-proxy-v2` swapped for `send-proxy` in the v1 test), so the document
stays true. Each test writes haproxy.cfg, runs `haproxy -f CFG -db` in the
foreground itself, and connects through it with Python sockets bound to
127.0.0.5, so the client's real address differs from HAProxy's 127.0.0.1.

Skipped, with a message, only when haproxy is not installed
(scripts/install-deps installs it).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, TcpkitProcess, listening_on, pick_free_port, tcpkit_path, wait_until
from serve_util import DEFAULT_REPLY, LISTENING_RE, count_lines, find_line, peer_name, recv_line, \
    recv_until_eof, wait_log

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

REPLY = DEFAULT_REPLY.encode()
DEPLOY = REPO_ROOT / "docs" / "deploy.md"
CLIENT_SOURCE = "127.0.0.5"
# The ports docs/deploy.md uses: HAProxy's frontend, then the two instances.
DOC_FRONTEND = ":8888"
DOC_SERVER_PORTS = (9001, 9002)


# --------------------------------------------------------------------------
# The configuration, from docs/deploy.md


def doc_block(language: str) -> str:
    """The one fenced block of `language` in docs/deploy.md."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", DEPLOY.read_text(), re.S | re.M)
    assert len(blocks) == 1, f"docs/deploy.md should have exactly one ```{language} block"
    return blocks[0]


def haproxy_config(frontend: int, servers: list[int], send_proxy: str = "send-proxy-v2") -> str:
    """docs/deploy.md's haproxy.cfg with the test's ports: the frontend on
    127.0.0.1:`frontend` and one server line per port in `servers`."""
    text = doc_block("haproxy")
    assert f"bind {DOC_FRONTEND}\n" in text
    text = text.replace(f"bind {DOC_FRONTEND}\n", f"bind 127.0.0.1:{frontend}\n")
    server_lines = [line for line in text.splitlines() if line.lstrip().startswith("server ")]
    assert len(server_lines) == len(DOC_SERVER_PORTS), server_lines
    template = server_lines[0]
    assert f"127.0.0.1:{DOC_SERVER_PORTS[0]} " in template and " send-proxy-v2 " in template
    lines = []
    for i, port in enumerate(servers, 1):
        line = template.replace("tcpkit1", f"tcpkit{i}").replace(f":{DOC_SERVER_PORTS[0]} ", f":{port} ")
        lines.append(line.replace(" send-proxy-v2 ", f" {send_proxy} "))
    text = text.replace("\n".join(server_lines), "\n".join(lines))
    return text


def unit_exec_start(port: int) -> list[str]:
    """The systemd unit's ExecStart, with %i (the port) filled in and the
    installed program replaced by the one under test."""
    unit = doc_block("ini")
    (line,) = [l for l in unit.splitlines() if l.startswith("ExecStart=")]
    argv = shlex.split(line[len("ExecStart="):].replace("%i", str(port)))
    assert argv[0] == "/usr/local/bin/tcpkit", argv
    return [str(tcpkit_path()), *argv[1:]]


# --------------------------------------------------------------------------
# Processes


@pytest.fixture(scope="module")
def haproxy_bin() -> str:
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.skip("haproxy is not installed; scripts/install-deps installs it (apt-get install haproxy)")
    return path


def start_backend(tcpkit_process, port: int) -> TcpkitProcess:
    """One instance, started exactly as the systemd unit starts it."""
    server = tcpkit_process(argv=unit_exec_start(port))
    server.wait_for_line(LISTENING_RE, stream="stdout")
    return server


def start_haproxy(tcpkit_process, haproxy_bin: str, tmp_path: Path, config: str, frontend: int) -> TcpkitProcess:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config)
    check = subprocess.run([haproxy_bin, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"haproxy -c rejected the configuration:\n{check.stdout}{check.stderr}\n{config}"
    proxy = tcpkit_process(argv=[haproxy_bin, "-f", str(cfg), "-db"])
    try:
        wait_until(lambda: listening_on(frontend) or proxy.returncode is not None, timeout=15,
                   message=f"haproxy listening on {frontend}")
    except TimeoutError:
        raise AssertionError(proxy.describe()) from None
    assert proxy.returncode is None, f"haproxy exited:\n{proxy.describe()}"
    return proxy


def client_via(frontend: int, timeout: float = 20) -> socket.socket:
    """A client bound to 127.0.0.5, connected to HAProxy."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((CLIENT_SOURCE, 0))
    sock.connect(("127.0.0.1", frontend))
    return sock


# --------------------------------------------------------------------------
# The real client address reaches tcpkit


# The last one adds a CRC32C TLV, which tcpkit verifies.
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2", "send-proxy-v2 proxy-v2-options crc32c"])
def test_client_address_reaches_the_log(tcpkit_process, haproxy_bin, tmp_path, send_proxy):
    backend_port, frontend = pick_free_port(), pick_free_port()
    server = start_backend(tcpkit_process, backend_port)
    start_haproxy(tcpkit_process, haproxy_bin, tmp_path, haproxy_config(frontend, [backend_port], send_proxy),
                  frontend)
    with client_via(frontend) as client:
        me = peer_name(client)
        assert me.startswith(CLIENT_SOURCE + ":")
        buffer = bytearray()
        for text in ("hello", "world"):
            client.sendall(text.encode() + b"\n")
            assert recv_line(client, buffer) == REPLY
    escaped = re.escape(me)
    wait_log(server, rf"connect {escaped} via 127\.0\.0\.1:\d+ \(clients: \d+\)$")
    wait_log(server, rf"message from {escaped}: hello$")
    wait_log(server, rf"message from {escaped}: world$")
    wait_log(server, rf"disconnect {escaped}: peer closed")
    # HAProxy's own address shows up only for its health checks.
    assert find_line(server, r"message from 127\.0\.0\.1:\d+: (hello|world)$") is None
    assert find_line(server, r"bad PROXY header|untrusted") is None


def test_regression_a_unix_socket_backend_trusts_its_file_permissions(tcpkit_process, haproxy_bin, tmp_path):
    """HAProxy in front of `serve --unix` (server ... unix@PATH send-proxy-v2):
    there is no proxy address to trust, so the socket file's permissions are
    the trust and --trusted-proxy is not needed. It used to be required, and
    impossible to satisfy: every connection was refused as untrusted."""
    frontend = pick_free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix="tcpkit-haproxy-", dir="/tmp"))  # sun_path is short
    try:
        path = sock_dir / "chat.sock"
        server = tcpkit_process("serve", "--unix", str(path), "--unix-mode", "600", "--framing", "line",
                                "--proxy-protocol", "--allow", f"{CLIENT_SOURCE}/32")
        server.wait_for_line(r"listening on unix:", stream="stdout")
        config = haproxy_config(frontend, [0]).replace("127.0.0.1:0 ", f"unix@{path} ")
        assert f"unix@{path} send-proxy-v2" in config, config
        start_haproxy(tcpkit_process, haproxy_bin, tmp_path, config, frontend)
        with client_via(frontend) as client:
            me = peer_name(client)
            buffer = bytearray()
            client.sendall(b"hello\n")
            assert recv_line(client, buffer) == REPLY
        wait_log(server, rf"message from {re.escape(me)}: hello$")
        assert find_line(server, r"untrusted|bad PROXY header") is None
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_health_checks_are_answered_local_headers(tcpkit_process, haproxy_bin, tmp_path):
    """check-send-proxy with v2: HAProxy's checks carry LOCAL headers, which
    keep the connection's own address, and their "ping" is answered."""
    backend_port, frontend = pick_free_port(), pick_free_port()
    server = start_backend(tcpkit_process, backend_port)
    start_haproxy(tcpkit_process, haproxy_bin, tmp_path, haproxy_config(frontend, [backend_port]), frontend)
    check = wait_log(server, r"connect (127\.0\.0\.1:\d+) \(clients: \d+\)$", timeout=15).group(1)
    wait_log(server, rf"message from {re.escape(check)}: ping$")
    assert find_line(server, r"bad PROXY header|untrusted|PROXY header timeout") is None


def test_direct_connection_with_a_header_is_refused(tcpkit_process, haproxy_bin, tmp_path):
    """Only HAProxy's address is trusted: a client that goes around it and
    writes its own header to claim another address is closed."""
    backend_port, frontend = pick_free_port(), pick_free_port()
    server = start_backend(tcpkit_process, backend_port)
    start_haproxy(tcpkit_process, haproxy_bin, tmp_path, haproxy_config(frontend, [backend_port]), frontend)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sneaky:
        sneaky.settimeout(10)
        sneaky.bind((CLIENT_SOURCE, 0))
        sneaky.connect(("127.0.0.1", backend_port))
        me = peer_name(sneaky)
        try:
            sneaky.sendall(b"PROXY TCP4 10.9.9.9 127.0.0.1 1234 80\r\nspoofed\n")
        except OSError:
            pass
        data, _how = recv_until_eof(sneaky)
        assert data == b""
    wait_log(server, rf"disconnect {re.escape(me)}: refused: untrusted proxy")
    assert find_line(server, r"10\.9\.9\.9") is None
    # HAProxy's clients are still served.
    with client_via(frontend) as client:
        client.sendall(b"legit\n")
        assert recv_line(client, bytearray()) == REPLY


# --------------------------------------------------------------------------
# Graceful drain and a rolling restart behind HAProxy


class StreamingClient(threading.Thread):
    """Sends numbered lines through HAProxy, one at a time, each waiting for
    its reply. When the connection ends before the reply (its instance was
    drained), it reconnects through HAProxy and sends the same line again,
    so every line gets a reply; a reply that never comes fails the test."""

    def __init__(self, index: int, frontend: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.index = index
        self.frontend = frontend
        self.stop = stop
        self.replied = 0
        self.reconnects = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test's thread
            self.error = e

    def _exchange(self, sock: socket.socket, buffer: bytearray, line: bytes) -> bool:
        """Sends `line`; True with its reply, False when the connection ended first."""
        try:
            sock.sendall(line)
            while b"\n" not in buffer:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                buffer += chunk
        except (ConnectionResetError, BrokenPipeError):
            return False
        reply, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        assert reply == REPLY, reply
        return True

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        sock, buffer = None, bytearray()
        while not self.stop.is_set():
            assert time.monotonic() < deadline, f"client {self.index} got stuck"
            if sock is None:
                sock, buffer = client_via(self.frontend), bytearray()
            if self._exchange(sock, buffer, f"c{self.index}-{self.replied}\n".encode()):
                self.replied += 1
                time.sleep(0.01)  # pacing only: keeps the logs small
                continue
            sock.close()
            sock = None
            self.reconnects += 1
            time.sleep(0.05)  # while HAProxy has no server up, do not spin
        if sock is not None:
            sock.close()


def served_messages(*servers: TcpkitProcess) -> set[str]:
    found = set()
    for server in servers:
        for line in list(server.stdout_lines):
            match = re.search(r" message from ([^ ]+): (c\d+-\d+)$", line)
            if match:
                assert match.group(1).startswith(CLIENT_SOURCE + ":"), line
                found.add(match.group(2))
    return found


def messages_on(server: TcpkitProcess) -> int:
    return count_lines(server, r" message from .*: c\d+-\d+$")


def stop_gracefully(server: TcpkitProcess) -> None:
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0, server.describe()
    assert find_line(server, r"stopped: served \d+ connections"), server.describe()


def test_rolling_restart_loses_no_message(tcpkit_process, haproxy_bin, tmp_path):
    """Two instances behind HAProxy while clients stream: SIGTERM the first
    (it drains its clients, which reconnect to the second), start it again,
    then SIGTERM the second. Every line gets its reply and is in a log."""
    ports, frontend = [pick_free_port(), pick_free_port()], pick_free_port()
    first = start_backend(tcpkit_process, ports[0])
    second = start_backend(tcpkit_process, ports[1])
    start_haproxy(tcpkit_process, haproxy_bin, tmp_path, haproxy_config(frontend, ports), frontend)

    stop = threading.Event()
    clients = [StreamingClient(i, frontend, stop) for i in range(6)]
    for c in clients:
        c.start()
    try:
        # Both instances carry traffic before anything stops.
        wait_until(lambda: messages_on(first) >= 20 and messages_on(second) >= 20, timeout=30,
                   message="traffic on both instances")
        stop_gracefully(first)
        replied = sum(c.replied for c in clients)
        wait_until(lambda: sum(c.replied for c in clients) >= replied + 60, timeout=30,
                   message="traffic going on after the first instance stopped")

        restarted = start_backend(tcpkit_process, ports[0])
        # HAProxy marks it up after `rise` (2) answered health checks.
        wait_until(lambda: count_lines(restarted, r"message from 127\.0\.0\.1:\d+: ping$") >= 3, timeout=30,
                   message="health checks answered by the restarted instance")
        stop_gracefully(second)
        wait_until(lambda: messages_on(restarted) >= 60, timeout=30,
                   message="the clients moved to the restarted instance")
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=30)
    for c in clients:
        assert c.error is None, f"client {c.index}: {c.error!r}"
        assert not c.is_alive()
        assert c.replied > 0
        # Every client was on one of the two stopped instances at least once.
        assert c.reconnects >= 1, f"client {c.index} was never drained"
    served = served_messages(first, second, restarted)
    for c in clients:
        for n in range(c.replied):
            assert f"c{c.index}-{n}" in served, f"c{c.index}-{n} was replied to but is in no log"


# --------------------------------------------------------------------------
# The systemd unit, as written


def test_systemd_unit_verifies(tmp_path):
    """docs/deploy.md's unit passes `systemd-analyze verify` (unknown keys,
    bad values, a missing program) with only the program's path changed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = doc_block("ini").replace("/usr/local/bin/tcpkit", str(tcpkit_path()))
    path = tmp_path / "tcpkit@9001.service"
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result
    # Warnings (an unknown key, say) do not change the exit code; they show
    # up as lines naming the unit.
    assert path.name not in result.stderr + result.stdout, result.stderr + result.stdout

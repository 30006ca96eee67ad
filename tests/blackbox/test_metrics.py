"""Black-box tests of `tcpkit serve --metrics HOST:PORT`.

The program serves Prometheus text format at /metrics, a JSON list of the
connected clients at /clients.json and a live status page at / that renders
that list with a little JavaScript. Scrapes use Python's urllib; the status
page is loaded by a real headless Chromium, so the test proves the script
ran, not only that the HTML was served.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from conftest import wait_until
from serve_util import (DEFAULT_REPLY, assert_closed_by_server, connect, peer_name, recv_exact, recv_line,
                        start_serve, wait_log)

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

METRICS_RE = r"metrics on http://127\.0\.0\.1:(\d+)/metrics, status page http://127\.0\.0\.1:\d+/"
FAMILIES = {
    "tcpkit_connections_open": "gauge",
    "tcpkit_connections_total": "counter",
    "tcpkit_bytes_received_total": "counter",
    "tcpkit_bytes_sent_total": "counter",
    "tcpkit_messages_received_total": "counter",
    "tcpkit_messages_sent_total": "counter",
    "tcpkit_disconnects_total": "counter",
    "tcpkit_errors_total": "counter",
    "tcpkit_refused_total": "counter",
}


# --- Prometheus text format (0.0.4), parsed strictly -----------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


@dataclass
class Family:
    help: str | None = None
    type: str | None = None
    samples: dict = field(default_factory=dict)  # frozenset of label pairs -> value


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = LABEL_RE.match(text, pos)
        assert match, f"bad label syntax at {text[pos:]!r}"
        name, raw = match.group(1), match.group(2)
        assert name not in labels, f"label {name} repeated in {text!r}"
        labels[name] = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), raw)
        pos = match.end()
    return labels


def parse_exposition(text: str) -> dict[str, Family]:
    """Every sample must follow its family's # HELP and # TYPE lines, each
    of which appears once; values must be numbers."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name, rest = line[2:6], *line[7:].split(" ", 1)
            family = families.setdefault(name, Family())
            assert not family.samples, f"{kind} for {name} after its samples"
            if kind == "HELP":
                assert family.help is None, f"two HELP lines for {name}"
                assert rest.strip(), f"empty HELP for {name}"
                family.help = rest
            else:
                assert family.type is None, f"two TYPE lines for {name}"
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), rest
                family.type = rest
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        match = SAMPLE_RE.match(line)
        assert match, f"bad sample line {line!r}"
        name, labels, value = match.group(1), parse_labels(match.group(2) or ""), float(match.group(3))
        family = families.get(name)
        assert family is not None and family.help and family.type, f"sample {name} before its HELP and TYPE"
        assert not math.isnan(value), line
        key = frozenset(labels.items())
        assert key not in family.samples, f"duplicate sample {line!r}"
        family.samples[key] = value
    return families


class Metrics:
    def __init__(self, families: dict[str, Family], mode: str):
        self.families = families
        self.mode = mode

    def get(self, name: str, **labels: str) -> float:
        key = frozenset({"mode": self.mode, **labels}.items())
        samples = self.families[name].samples
        assert key in samples, f"no sample {name}{labels}; have {list(samples)}"
        return samples[key]


def get_url(port: int, path: str, method: str = "GET", data: bytes | None = None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def scrape(port: int, mode: str) -> Metrics:
    status, headers, body = get_url(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert headers["Connection"] == "close"
    families = parse_exposition(body.decode())
    for name, kind in FAMILIES.items():
        assert name in families, f"missing family {name}"
        assert families[name].type == kind, name
        assert families[name].samples, f"{name} has no samples"
        for key in families[name].samples:
            assert dict(key)["mode"] == mode, f"{name} sample without mode={mode}: {dict(key)}"
    return Metrics(families, mode)


def start_with_metrics(tcpkit_process, *args) -> tuple[object, int, int]:
    server, port = start_serve(tcpkit_process, "--metrics", "127.0.0.1:0", *args)
    metrics_port = int(wait_log(server, METRICS_RE).group(1))
    return server, port, metrics_port


def test_counters_move_exactly_with_clients(tcpkit_process):
    server, port, mport = start_with_metrics(tcpkit_process, "--framing", "line", "--max-conns", "2",
                                             "--max-message", "64")
    m = scrape(mport, "ack")
    for name in ("tcpkit_connections_open", "tcpkit_connections_total", "tcpkit_bytes_received_total",
                 "tcpkit_bytes_sent_total", "tcpkit_messages_received_total", "tcpkit_messages_sent_total"):
        assert m.get(name) == 0, name
    for reason in ("peer closed", "connection reset", "idle timeout", "message too large", "slow reader"):
        assert m.get("tcpkit_disconnects_total", reason=reason) == 0
    assert m.get("tcpkit_refused_total", reason="too many connections") == 0
    assert m.get("tcpkit_refused_total", reason="not allowed") == 0

    reply = (DEFAULT_REPLY + "\n").encode()
    a = connect(port)
    a.sendall(b"hello\n")
    assert recv_exact(a, len(reply)) == reply
    m = scrape(mport, "ack")
    assert m.get("tcpkit_connections_open") == 1
    assert m.get("tcpkit_connections_total") == 1
    assert m.get("tcpkit_bytes_received_total") == 6
    assert m.get("tcpkit_bytes_sent_total") == len(reply)
    assert m.get("tcpkit_messages_received_total") == 1
    assert m.get("tcpkit_messages_sent_total") == 1

    b = connect(port)
    b.sendall(b"one\ntwo\n")
    assert recv_exact(b, 2 * len(reply)) == 2 * reply
    m = scrape(mport, "ack")
    assert m.get("tcpkit_connections_open") == 2
    assert m.get("tcpkit_connections_total") == 2
    assert m.get("tcpkit_bytes_received_total") == 6 + 8
    assert m.get("tcpkit_bytes_sent_total") == 3 * len(reply)
    assert m.get("tcpkit_messages_received_total") == 3
    assert m.get("tcpkit_messages_sent_total") == 3

    # A third client is over --max-conns: accepted and closed at once.
    c = connect(port)
    assert assert_closed_by_server(c) == b""
    c.close()
    wait_until(lambda: scrape(mport, "ack").get("tcpkit_refused_total", reason="too many connections") == 1,
               message="the refusal to be counted")
    m = scrape(mport, "ack")
    assert m.get("tcpkit_connections_total") == 2
    assert m.get("tcpkit_connections_open") == 2

    # A leaves: its bytes move from the live sum to the closed total, unchanged.
    a.close()
    wait_until(lambda: scrape(mport, "ack").get("tcpkit_connections_open") == 1, message="A's disconnect")
    m = scrape(mport, "ack")
    assert m.get("tcpkit_disconnects_total", reason="peer closed") == 1
    assert m.get("tcpkit_bytes_received_total") == 14
    assert m.get("tcpkit_bytes_sent_total") == 3 * len(reply)
    assert m.get("tcpkit_errors_total", reason="message too large") == 0

    # B sends a line over --max-message: dropped, counted as an error.
    b.sendall(b"x" * 100 + b"\n")
    assert_closed_by_server(b)
    b.close()
    wait_until(lambda: scrape(mport, "ack").get("tcpkit_connections_open") == 0, message="B's disconnect")
    m = scrape(mport, "ack")
    assert m.get("tcpkit_disconnects_total", reason="message too large") == 1
    assert m.get("tcpkit_errors_total", reason="message too large") == 1
    assert m.get("tcpkit_disconnects_total", reason="peer closed") == 1
    assert m.get("tcpkit_bytes_received_total") == 14 + 101
    assert m.get("tcpkit_messages_received_total") == 3
    assert m.get("tcpkit_connections_total") == 2


def test_access_list_refusals_are_counted(tcpkit_process):
    server, port, mport = start_with_metrics(tcpkit_process, "--deny", "127.0.0.0/8")
    for _ in range(2):
        client = connect(port)
        assert assert_closed_by_server(client) == b""
        client.close()
    wait_until(lambda: scrape(mport, "ack").get("tcpkit_refused_total", reason="not allowed") == 2,
               message="both refusals to be counted")
    m = scrape(mport, "ack")
    assert m.get("tcpkit_refused_total", reason="too many connections") == 0
    assert m.get("tcpkit_connections_total") == 0
    assert m.get("tcpkit_connections_open") == 0


def test_echo_mode_counts_reads_and_labels_mode(tcpkit_process):
    server, port, mport = start_with_metrics(tcpkit_process, "--mode", "echo")
    with connect(port) as client:
        client.sendall(b"ping")
        assert recv_exact(client, 4) == b"ping"
        m = scrape(mport, "echo")
        assert m.get("tcpkit_messages_received_total") == 1
        assert m.get("tcpkit_messages_sent_total") == 1
        assert m.get("tcpkit_bytes_received_total") == 4
        assert m.get("tcpkit_bytes_sent_total") == 4


def test_echo_mode_counts_every_byte_of_a_bulk_echo(tcpkit_process):
    # A bulk peer is echoed inside the kernel (splice): its bytes never reach
    # the mode, and are counted all the same, bytes exactly, reads as messages.
    server, port, mport = start_with_metrics(tcpkit_process, "--mode", "echo")
    payload = bytes(i % 251 for i in range(4 << 20))
    with connect(port, timeout=20) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        assert recv_exact(client, len(payload), timeout=20) == payload
        sender.join(timeout=20)
        client.sendall(b"tail")
        assert recv_exact(client, 4) == b"tail"
    wait_until(lambda: scrape(mport, "echo").get("tcpkit_connections_open") == 0,
               message="the client to be gone")
    m = scrape(mport, "echo")
    assert m.get("tcpkit_bytes_received_total") == len(payload) + 4
    assert m.get("tcpkit_bytes_sent_total") == len(payload) + 4
    # At least one message per 256 KiB read, the most one read takes.
    reads = m.get("tcpkit_messages_received_total")
    assert len(payload) // (256 << 10) < reads <= len(payload) + 1
    assert m.get("tcpkit_messages_sent_total") == reads


def test_http_errors_and_headers(tcpkit_process):
    server, port, mport = start_with_metrics(tcpkit_process)
    status, headers, body = get_url(mport, "/nope")
    assert status == 404 and headers["Connection"] == "close"
    status, headers, _ = get_url(mport, "/metrics", method="POST", data=b"x=1")
    assert status == 405 and headers["Allow"] == "GET"
    status, _, _ = get_url(mport, "/metrics?name[]=tcpkit_connections_open")
    assert status == 200

    # A header block over the 8 KiB cap is refused, not buffered forever.
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 10000 + b"\r\n\r\n")
        buffer = bytearray()
        assert recv_line(raw, buffer) == b"HTTP/1.1 431 Request Header Fields Too Large\r"
    # A malformed request line gets 400.
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as raw:
        raw.sendall(b"hello\r\n\r\n")
        buffer = bytearray()
        assert recv_line(raw, buffer) == b"HTTP/1.1 400 Bad Request\r"

    status, headers, body = get_url(mport, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert "/clients.json" in page and "<script>" in page
    assert not re.search(r"""(src|href)=["']https?:""", page), "the page must not load external assets"


def test_clients_json_lists_peers_names_and_bytes(tcpkit_process):
    server, port, mport = start_with_metrics(tcpkit_process, "--mode", "chat")
    a = connect(port)
    a_buf = bytearray()
    wait_log(server, rf"connect {re.escape(peer_name(a))} ")
    b = connect(port)
    b_buf = bytearray()
    joined = recv_line(a, a_buf) + b"\n"
    assert joined == f"* {peer_name(b)} joined (2 online)\n".encode()
    a.sendall(b"/nick alice\n")
    renamed = recv_line(b, b_buf) + b"\n"
    assert renamed == f"* {peer_name(a)} is now known as alice\n".encode()
    confirmed = recv_line(a, a_buf) + b"\n"
    assert confirmed == b"* you are now known as alice\n"

    status, headers, body = get_url(mport, "/clients.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["open"] == 2
    rows = {row["peer"]: row for row in data["clients"]}
    assert set(rows) == {peer_name(a), peer_name(b)}
    assert rows[peer_name(a)]["name"] == "alice"
    assert rows[peer_name(b)]["name"] == peer_name(b)
    assert rows[peer_name(a)]["bytes_in"] == len(b"/nick alice\n")
    assert rows[peer_name(a)]["bytes_out"] == len(joined) + len(confirmed)
    assert rows[peer_name(b)]["bytes_in"] == 0
    assert rows[peer_name(b)]["bytes_out"] == len(renamed)
    for row in rows.values():
        since = datetime.strptime(row["since"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs((datetime.utcnow() - since).total_seconds()) < 60
    m = scrape(mport, "chat")
    assert m.get("tcpkit_messages_received_total") == 1
    assert m.get("tcpkit_messages_sent_total") == 3  # the join, the rename's notice and confirmation
    a.close()
    b.close()


def test_bad_metrics_address_is_a_usage_error(tcpkit):
    result = tcpkit("serve", "--port", "0", "--metrics", "nonsense")
    assert result.returncode == 2
    assert "--metrics" in result.stderr


# --- the status page in a real browser -------------------------------------

def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (scripts/install-deps installs it)")
    return path


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


def test_status_page_renders_clients_in_chromium(tcpkit_process, tmp_path):
    server, port, mport = start_with_metrics(tcpkit_process, "--mode", "chat")
    a = connect(port)
    wait_log(server, rf"connect {re.escape(peer_name(a))} ")
    b = connect(port)
    a_buf, b_buf = bytearray(), bytearray()
    assert recv_line(a, a_buf) == f"* {peer_name(b)} joined (2 online)".encode()
    b.sendall(b"/nick bob\n")
    assert recv_line(a, a_buf) == f"* {peer_name(b)} is now known as bob".encode()

    url = f"http://127.0.0.1:{mport}/"
    dom = run_chromium(tmp_path, "--dump-dom", url).stdout
    # The rows exist only if the script fetched /clients.json and rendered it.
    rows = re.findall(r'<tr class="client">(.*?)</tr>', dom)
    assert len(rows) == 2, dom
    assert any(f"<td>{peer_name(a)}</td>" in row for row in rows), dom
    assert any(f"<td>{peer_name(b)}</td><td>bob</td>" in row for row in rows), dom
    assert "2 connected" in dom

    shot = tmp_path / "status.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1024,600", url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000
    a.close()
    b.close()


def test_clients_json_names_the_client_a_proxy_header_names(tcpkit_process):
    """Behind a load balancer the status page lists the clients, not the balancer."""
    server, port, mport = start_with_metrics(tcpkit_process, "--proxy-protocol", "--trusted-proxy", "127.0.0.1/32",
                                             "--framing", "line")
    with connect(port) as proxied:
        proxied.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 8888\r\nhello\n")
        recv_line(proxied, bytearray())
        status, _, body = get_url(mport, "/clients.json")
        assert status == 200
        rows = json.loads(body)["clients"]
        assert [row["peer"] for row in rows] == ["203.0.113.9:40000"]


# --- hostile clients of the metrics server (design decision 10) ------------------------------

def raw_request(port: int, request: bytes) -> tuple[bytes, dict[str, str]]:
    """(status line, headers) of one request sent as raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request)
        buffer = bytearray()
        status = recv_line(raw, buffer).rstrip(b"\r")
        headers = {}
        while (line := recv_line(raw, buffer).rstrip(b"\r")) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return status, headers


def test_slow_connections_cannot_keep_a_scrape_out(tcpkit_process):
    """Regression: 64 connections that never finish their request held every
    slot of the metrics server, and each scrape after them was closed unread.
    A full server now evicts the oldest unfinished request instead."""
    server, port, mport = start_with_metrics(tcpkit_process)
    stalled = []
    try:
        for _ in range(70):
            s = socket.create_connection(("127.0.0.1", mport), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            stalled.append(s)
        for _ in range(3):
            scrape(mport, "ack")
    finally:
        for s in stalled:
            s.close()


def test_a_request_head_has_one_deadline_that_trickled_bytes_do_not_renew(tcpkit_process):
    """Regression: any byte re-armed a 10 s idle timer, so one byte every few
    seconds held a connection for ever. The whole head now has 5 s."""
    server, port, mport = start_with_metrics(tcpkit_process)
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as slow:
        start = time.monotonic()
        closed = False
        # The attack itself trickles; the server's close is what ends the loop.
        while time.monotonic() - start < 12:
            try:
                slow.sendall(b"X")
                slow.settimeout(0.5)
                if slow.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
        elapsed = time.monotonic() - start
    assert closed, "a trickling client was never closed"
    assert elapsed < 9, f"closed only after {elapsed:.1f} s"


@pytest.mark.parametrize("host", [b"evil.example", b"evil.example:9100", b"127.0.0.1.evil.example",
                                  b"localhost.evil.example"])
def test_a_host_that_does_not_name_the_server_is_refused(tcpkit_process, host):
    """Regression: no Host check, so DNS rebinding let any web page read the
    loopback /clients.json through the operator's browser."""
    server, port, mport = start_with_metrics(tcpkit_process)
    status, headers = raw_request(mport, b"GET /clients.json HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status == b"HTTP/1.1 421 Misdirected Request"
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LOCALHOST.", "[::1]:{port}"])
def test_hosts_that_name_the_server_are_served(tcpkit_process, host):
    server, port, mport = start_with_metrics(tcpkit_process)
    request = f"GET /clients.json HTTP/1.1\r\nHost: {host.format(port=mport)}\r\n\r\n".encode()
    status, headers = raw_request(mport, request)
    assert status == b"HTTP/1.1 200 OK"
    assert headers["x-content-type-options"] == "nosniff"


def test_every_answer_says_nosniff(tcpkit_process):
    server, port, mport = start_with_metrics(tcpkit_process)
    for path in ("/", "/metrics", "/clients.json", "/nothing-here"):
        status, headers, _ = get_url(mport, path)
        assert headers["X-Content-Type-Options"] == "nosniff", path
    status, headers = raw_request(mport, b"BAD\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["x-content-type-options"] == "nosniff"

"""Black-box tests of `tcpkit serve`: the tutorial's TCP server as a tool.

The other side is always a real peer: Python's socket module written the way
the tutorial writes its client, `nc` or `socat`. Servers always listen on
`--port 0` (or a port picked free a moment ago) and the tests read the real
port from the first log line. Chat mode is in test_serve_chat.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (SANITIZER, ipv6_loopback_available, pick_free_port, run_tcpkit, scaled,
                      tcpkit_path, user_threads, wait_until)
from hostile_util import cpu_seconds
from serve_util import (DEFAULT_REPLY, LISTENING_RE, STAMP, STAMP_RE, ack_round_trip,
                        assert_closed_by_server, connect, count_lines, find_line, frame,
                        message_lines, own_process_name, peer_name, recv_exact, recv_frame,
                        recv_line, recv_until_eof, start_serve, tcp_states_on_port, wait_log)

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

REPLY = DEFAULT_REPLY.encode("utf-8")


def esc(text: str) -> str:
    return re.escape(text)


# --------------------------------------------------------------------------
# Startup and the log format


def test_listening_line_shows_defaults_and_real_port(tcpkit_process):
    server, port = start_serve(tcpkit_process)
    first = server.stdout_lines[0]
    assert STAMP_RE.match(first), first
    assert first.endswith(f"listening on 127.0.0.1:{port} (mode ack, framing raw, encoding utf-8)")
    assert port != 0
    with connect(port) as client:
        ack_round_trip(client, b"hello", REPLY)


def test_listening_line_shows_chosen_options(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "echo", "--framing", "line",
                               "--encoding", "gbk")
    assert re.search(esc(f"listening on 127.0.0.1:{port} (mode echo, framing line, "
                         "encoding gbk)"), server.stdout_lines[0]), server.stdout_lines[0]


def test_every_text_line_is_time_stamped(tcpkit_process):
    server, port = start_serve(tcpkit_process)
    with connect(port) as client:
        ack_round_trip(client, b"one", REPLY)
    wait_log(server, r"disconnect ")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert server.stdout_lines
    for line in server.stdout_lines:
        assert STAMP_RE.match(line), f"no time stamp: {line!r}"


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost"])
def test_host_flag(tcpkit_process, host):
    server, port = start_serve(tcpkit_process, "--host", host)
    shown = "0.0.0.0" if host == "0.0.0.0" else r"(127\.0\.0\.1|\[::1\])"
    for line in server.stdout_lines:
        assert re.search(r"listening on " + shown + f":{port} ", line), line
    with connect(port) as client:
        ack_round_trip(client, b"via " + host.encode(), REPLY)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="IPv6 loopback is not available")
def test_ipv6_host_is_bracketed(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--host", "::1")
    assert f"listening on [::1]:{port} (mode ack" in server.stdout_lines[0]
    with socket.create_connection(("::1", port), timeout=10) as client:
        me = client.getsockname()
        ack_round_trip(client, b"six", REPLY)
        server.wait_for_line(esc(f"message from [::1]:{me[1]}: six") + "$")


# --------------------------------------------------------------------------
# ack mode (the tutorial's server)


def test_ack_tutorial_client_connect_message_disconnect(tcpkit_process):
    """The tutorial's exchange: send, get 收到了你的訊息, close; the log has
    connect, message and disconnect lines naming the client's address."""
    server, port = start_serve(tcpkit_process)
    client = connect(port)
    me = peer_name(client)
    server.wait_for_line(STAMP + esc(f"connect {me} (clients: 1)") + "$")
    ack_round_trip(client, "hello 世界".encode(), REPLY)
    server.wait_for_line(STAMP + esc(f"message from {me}: hello 世界") + "$")
    ack_round_trip(client, b"again", REPLY)
    server.wait_for_line(STAMP + esc(f"message from {me}: again") + "$")
    client.close()
    server.wait_for_line(STAMP + esc(f"disconnect {me}: peer closed (clients: 0)") + "$")


def test_ack_client_count_goes_up_and_down(tcpkit_process):
    server, port = start_serve(tcpkit_process)
    a = connect(port)
    server.wait_for_line(esc(f"connect {peer_name(a)} (clients: 1)"))
    b = connect(port)
    server.wait_for_line(esc(f"connect {peer_name(b)} (clients: 2)"))
    name_a = peer_name(a)
    a.close()
    server.wait_for_line(esc(f"disconnect {name_a}: peer closed (clients: 1)"))
    ack_round_trip(b, b"still here", REPLY)
    name_b = peer_name(b)
    b.close()
    server.wait_for_line(esc(f"disconnect {name_b}: peer closed (clients: 0)"))


def test_ack_custom_reply(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--reply", "OK, got it")
    with connect(port) as client:
        ack_round_trip(client, b"ping", b"OK, got it")
        # raw framing: the reply is the bytes exactly, nothing appended
        client.settimeout(0.3)
        with pytest.raises(socket.timeout):
            client.recv(1)


def test_ack_line_framing_replies_once_per_line(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "line", "--reply", "ok")
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        client.sendall(b"first\nsecond\nthi")
        assert recv_exact(client, 6) == b"ok\nok\n"
        server.wait_for_line(esc(f"message from {me}: first") + "$")
        server.wait_for_line(esc(f"message from {me}: second") + "$")
        client.sendall(b"rd\n")
        assert recv_exact(client, 3) == b"ok\n"
        server.wait_for_line(esc(f"message from {me}: third") + "$")
    assert len(message_lines(server)) == 3


def test_ack_line_framing_default_reply_has_newline(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "line")
    with connect(port) as client:
        client.sendall("你好\n".encode())
        buffer = bytearray()
        assert recv_line(client, buffer) == REPLY
        assert buffer == b""


def test_ack_length_framing(tcpkit_process):
    """u32 big-endian length-prefixed frames in, length-prefixed replies out,
    whatever way the frames are cut into sends."""
    server, port = start_serve(tcpkit_process, "--framing", "length")
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        client.sendall(frame("第一".encode()) + frame(b"second"))
        assert recv_frame(client) == REPLY
        assert recv_frame(client) == REPLY
        server.wait_for_line(esc(f"message from {me}: 第一") + "$")
        server.wait_for_line(esc(f"message from {me}: second") + "$")
        # a frame split inside its header and inside its payload
        data = frame(b"split frame")
        client.sendall(data[:2])
        client.sendall(data[2:7])
        client.sendall(data[7:])
        assert recv_frame(client) == REPLY
        server.wait_for_line(esc(f"message from {me}: split frame") + "$")
        # an empty frame is a message too
        client.sendall(frame(b""))
        assert recv_frame(client) == REPLY
        server.wait_for_line(esc(f"message from {me}: ") + "$")
    assert len(message_lines(server)) == 4


def test_ack_length_framing_custom_reply_gbk(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "length", "--encoding", "gbk",
                               "--reply", "好的")
    with connect(port) as client:
        client.sendall(frame("你好".encode("gbk")))
        assert recv_frame(client) == "好的".encode("gbk")
        server.wait_for_line(esc(f"message from {peer_name(client)}: 你好") + "$")


def test_hundred_concurrent_clients_each_get_their_reply(tcpkit_process):
    """100 Python clients connected at the same time, each in its own thread,
    each sends its own message and gets one whole reply."""
    server, port = start_serve(tcpkit_process)
    count = 100
    clients = [connect(port, timeout=20) for _ in range(count)]
    try:
        server.wait_for_line(r"\(clients: 100\)", timeout=20)
        start = threading.Barrier(count)
        results: dict[int, object] = {}

        def run(i: int) -> None:
            try:
                start.wait(timeout=20)
                clients[i].sendall(f"client {i:03d}".encode())
                results[i] = recv_exact(clients[i], len(REPLY), timeout=20)
            except BaseException as e:  # report it from the main thread
                results[i] = e

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert results == {i: REPLY for i in range(count)}
        wait_until(lambda: len(message_lines(server)) == count, timeout=10,
                   message="100 message lines")
        for i in range(count):
            me = peer_name(clients[i])
            assert find_line(server, esc(f"message from {me}: client {i:03d}") + "$"), me
    finally:
        for c in clients:
            c.close()
    wait_log(server, r"\(clients: 0\)$", timeout=20)
    assert count_lines(server, r"disconnect .*: peer closed") == count


def test_threads_flag_serves_concurrent_clients(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--threads", "4")
    clients = [connect(port) for _ in range(24)]
    try:
        for c in clients:
            c.sendall(b"x")
        for c in clients:
            assert recv_exact(c, len(REPLY)) == REPLY
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: count_lines(server, r" disconnect ") == len(clients), timeout=10,
               message="a disconnect line per client")
    # each event's count is the count right after that event, even when
    # several I/O threads connect and disconnect clients at the same time:
    # the connect lines say 1..24 once each, the disconnect lines 23..0
    def counts(event):
        return sorted(int(m.group(1)) for line in server.stdout_lines
                      if (m := re.search(f" {event} .*\\(clients: (\\d+)\\)$", line)))
    assert counts("connect") == list(range(1, len(clients) + 1))
    assert counts("disconnect") == list(range(len(clients)))


def test_connection_reset_is_logged(tcpkit_process):
    server, port = start_serve(tcpkit_process)
    client = connect(port)
    me = peer_name(client)
    ack_round_trip(client, b"bye", REPLY)
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    server.wait_for_line(esc(f"disconnect {me}: connection reset (clients: 0)"))


# --------------------------------------------------------------------------
# Encodings


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "big5"])
def test_encoding_round_trip(tcpkit_process, encoding):
    """The tutorial's server decodes GBK: the client sends GBK bytes of 你好,
    the log shows 你好 and the reply is 收到了你的訊息 in the same encoding.
    (Big5's 你好 is a7 41 a6 6e: its trail bytes are ASCII letters.)"""
    server, port = start_serve(tcpkit_process, "--encoding", encoding)
    assert server.stdout_lines[0].endswith(f"encoding {encoding})")
    with connect(port) as client:
        ack_round_trip(client, "你好".encode(encoding), DEFAULT_REPLY.encode(encoding))
        server.wait_for_line(esc(f"message from {peer_name(client)}: 你好") + "$")


def test_gbk_tutorial_exchange(tcpkit_process):
    """Exactly the tutorial's pair: recv_data.decode("gbk") on the server,
    and the client decoding the reply it gets with the same codec."""
    server, port = start_serve(tcpkit_process, "--encoding", "gbk")
    tcp_client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_client_socket.settimeout(10)
    tcp_client_socket.connect(("127.0.0.1", port))
    tcp_client_socket.send("你好".encode("gbk"))
    reply = recv_exact(tcp_client_socket, len(DEFAULT_REPLY.encode("gbk")))
    assert reply.decode("gbk") == "收到了你的訊息"
    me = peer_name(tcp_client_socket)
    tcp_client_socket.close()
    server.wait_for_line(esc(f"message from {me}: 你好") + "$")
    server.wait_for_line(esc(f"disconnect {me}: peer closed"))


def test_invalid_bytes_are_logged_escaped(tcpkit_process):
    server, port = start_serve(tcpkit_process)
    with connect(port) as client:
        ack_round_trip(client, b"ab\xffcd", REPLY)
        match = server.wait_for_line(esc(f"message from {peer_name(client)}: ") + "(.*)$")
    assert re.fullmatch(r"ab\\x[fF][fF]cd", match.group(1)), match.group(1)


def test_utf8_character_split_across_reads_raw(tcpkit_process):
    """Raw framing logs each read, but the decoder streams per connection:
    a character cut between two sends is completed at the start of the next
    message line instead of turning into escapes."""
    server, port = start_serve(tcpkit_process)
    ni = "你".encode()  # e4 bd a0
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        ack_round_trip(client, b"ab" + ni[:1], REPLY)
        first = server.wait_for_line(esc(f"message from {me}: ") + "(.*)$")
        ack_round_trip(client, ni[1:] + b"cd", REPLY)
        second = server.wait_for_line(esc(f"message from {me}: ") + "(.*)$")
    assert first.group(1) == "ab"
    assert second.group(1) == "你cd"


def test_utf8_character_split_across_reads_line(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "line", "--reply", "ok")
    hao = "好".encode()
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        client.sendall(b"x" + hao[:2])
        wait_log(server, esc(f"connect {me}"))
        client.sendall(hao[2:] + b"y\n")
        assert recv_exact(client, 3) == b"ok\n"
        server.wait_for_line(esc(f"message from {me}: x好y") + "$")


def test_gbk_character_split_across_reads_line(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "line", "--encoding", "gbk",
                               "--reply", "ok")
    ni = "你".encode("gbk")
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        client.sendall(ni[:1])
        wait_log(server, esc(f"connect {me}"))
        client.sendall(ni[1:] + "好\n".encode("gbk"))
        assert recv_exact(client, 3) == b"ok\n"
        server.wait_for_line(esc(f"message from {me}: 你好") + "$")


# --------------------------------------------------------------------------
# echo and discard


def test_echo_returns_every_byte_python(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "echo")
    payload = os.urandom(2 << 20)
    with connect(port, timeout=20) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        got = recv_exact(client, len(payload), timeout=20)
        sender.join(timeout=20)
        assert got == payload
        client.shutdown(socket.SHUT_WR)
        rest, _ = recv_until_eof(client)
        assert rest == b""
    wait_log(server, r"disconnect .*: peer closed \(clients: 0\)")
    assert message_lines(server) == []


@pytest.mark.parametrize("framing", ["line", "length"])
def test_echo_ignores_framing(tcpkit_process, framing):
    server, port = start_serve(tcpkit_process, "--mode", "echo", "--framing", framing)
    payload = b"no newline, no length prefix \x00\xff"
    with connect(port) as client:
        client.sendall(payload)
        assert recv_exact(client, len(payload)) == payload
    wait_log(server, r"disconnect .*: peer closed \(clients: 0\)")
    assert message_lines(server) == []


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")
def test_echo_with_nc_is_byte_exact(tcpkit_process, tmp_path):
    server, port = start_serve(tcpkit_process, "--mode", "echo")
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(300_000) + "中文\r\n\x00".encode())
    with path.open("rb") as stdin:
        result = subprocess.run(["nc", "-N", "127.0.0.1", str(port)], stdin=stdin,
                                capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == path.read_bytes()
    wait_log(server, r"disconnect .*: peer closed \(clients: 0\)")


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_echo_with_socat_is_byte_exact(tcpkit_process, tmp_path):
    server, port = start_serve(tcpkit_process, "--mode", "echo")
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(300_000))
    with path.open("rb") as stdin:
        result = subprocess.run(["socat", "-t", "10", "-", f"TCP:127.0.0.1:{port}"], stdin=stdin,
                                capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == path.read_bytes()
    wait_log(server, r"disconnect .*: peer closed \(clients: 0\)")


def test_discard_drops_everything(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "discard")
    with connect(port) as client:
        me = peer_name(client)
        client.sendall(os.urandom(1 << 20))
        client.shutdown(socket.SHUT_WR)
        data, how = recv_until_eof(client)
        assert data == b""
        assert how is None
    wait_log(server, esc(f"disconnect {me}: peer closed (clients: 0)"))
    assert message_lines(server) == []


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")
def test_discard_with_nc(tcpkit_process, tmp_path):
    server, port = start_serve(tcpkit_process, "--mode", "discard")
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(100_000))
    with path.open("rb") as stdin:
        result = subprocess.run(["nc", "-N", "127.0.0.1", str(port)], stdin=stdin,
                                capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    wait_log(server, r"disconnect .*: peer closed \(clients: 0\)")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    stopped = wait_log(server, r"stopped: served (\d+) connections, (\d+) bytes in, "
                               r"(\d+) bytes out")
    assert stopped.groups() == ("1", "100000", "0")


# --------------------------------------------------------------------------
# --log-format json and --quiet


def test_json_log_format(tcpkit_process):
    server = tcpkit_process("serve", "--port", 0, "--log-format", "json")
    server.wait_for_line(r'"event": *"listening"', stream="stdout")
    port = int(json.loads(server.stdout_lines[0])["address"].rsplit(":", 1)[1])
    with connect(port) as client:
        me = peer_name(client)
        ack_round_trip(client, "hi 你好".encode(), REPLY)
        wait_log(server, r'"message"')
    wait_log(server, r'"disconnect"')
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    events = []
    for line in server.stdout_lines:
        obj = json.loads(line)  # every line is one JSON object
        assert isinstance(obj, dict), line
        assert isinstance(obj.get("time"), str) and re.match(STAMP[:-1], obj["time"]), line
        events.append(obj)
    by_event = {}
    for e in events:
        by_event.setdefault(e["event"], []).append(e)
    assert [e["event"] for e in events] == ["listening", "connect", "message", "disconnect",
                                            "stopping", "stopped"]
    assert by_event["listening"][0]["address"] == f"127.0.0.1:{port}"
    assert by_event["connect"][0]["peer"] == me
    assert by_event["connect"][0]["clients"] == 1
    assert by_event["message"][0]["peer"] == me
    assert by_event["message"][0]["text"] == "hi 你好"
    assert by_event["disconnect"][0]["peer"] == me
    assert by_event["disconnect"][0]["reason"] == "peer closed"
    assert by_event["disconnect"][0]["clients"] == 0
    assert by_event["stopping"][0]["clients"] == 0
    stopped = by_event["stopped"][0]
    assert stopped["connections"] == 1
    assert stopped["bytes_in"] == len("hi 你好".encode())
    assert stopped["bytes_out"] == len(REPLY)


def test_quiet_logs_no_per_connection_lines(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--quiet")
    for _ in range(3):
        with connect(port) as client:
            ack_round_trip(client, b"quiet please", REPLY)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert re.search(LISTENING_RE, server.stdout_lines[0])
    for line in server.stdout_lines:
        assert not re.search(r" (connect|message from|disconnect) ", line), line


# --------------------------------------------------------------------------
# Limits: --max-message, --max-conns, --idle-timeout


def test_max_message_line_framing_closes_only_that_connection(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "line", "--max-message", "16",
                               "--reply", "ok")
    good = connect(port)
    bad = connect(port)
    try:
        good.sendall(b"short line\n")
        assert recv_exact(good, 3) == b"ok\n"
        bad_name = peer_name(bad)
        bad.sendall(b"y" * 100 + b"\n")
        data = assert_closed_by_server(bad)
        assert b"ok" not in data
        server.wait_for_line(esc(f"disconnect {bad_name}: message too large (clients: 1)"))
        # the other connection keeps working
        good.sendall(b"still fine\n")
        assert recv_exact(good, 3) == b"ok\n"
        assert not find_line(server, esc("message from " + bad_name))
    finally:
        good.close()
        bad.close()


@pytest.mark.parametrize("backend, ring_sends", [("epoll", None), ("uring", None), ("uring", "1")])
def test_max_message_still_delivers_every_reply_written_before_it(tcpkit_process, backend,
                                                                   ring_sends):
    """2000 lines and then one over --max-message, in one send: the server
    answers each line, then closes; every answer arrives before the EOF, on
    both backends. Regression: on io_uring only the first 16 KiB of them
    did (the loop's send buffer), the last one cut."""
    env = dict(os.environ)
    if ring_sends is not None:
        env["TCPKIT_URING_SEND"] = ring_sends  # 1: small writes through the ring always
    server, port = start_serve(tcpkit_process, "-m", "ack", "--framing", "line",
                               "--max-message", "1024", "--reply", "ok" * 10,
                               "--io-backend", backend, "-q", env=env)
    with connect(port) as client:
        client.sendall(b"hi\n" * 2000 + b"x" * 5000 + b"\n")
        data, how = recv_until_eof(client)
    assert how is None
    replies = data.count(b"\n")
    assert replies == 2000, f"{replies} of 2000 replies ({len(data)} bytes), then the EOF"
    assert data == (b"ok" * 10 + b"\n") * 2000


def test_max_message_unterminated_line_over_limit(tcpkit_process):
    """A line that grows past the limit without ever ending is too large
    too: the server must not buffer it forever."""
    server, port = start_serve(tcpkit_process, "--framing", "line", "--max-message", "16")
    with connect(port) as client:
        me = peer_name(client)
        client.sendall(b"z" * 64)
        assert_closed_by_server(client)
    server.wait_for_line(esc(f"disconnect {me}: message too large"))


def test_max_message_length_framing(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--framing", "length", "--max-message", "16")
    good = connect(port)
    bad = connect(port)
    try:
        good.sendall(frame(b"0123456789"))
        assert recv_frame(good) == REPLY
        bad_name = peer_name(bad)
        bad.sendall(frame(b"x" * 17))
        assert_closed_by_server(bad)
        server.wait_for_line(esc(f"disconnect {bad_name}: message too large"))
        good.sendall(frame(b"again"))
        assert recv_frame(good) == REPLY
    finally:
        good.close()
        bad.close()


def test_max_message_length_header_alone_is_enough(tcpkit_process):
    """A frame header announcing 1 GiB is refused before any payload."""
    server, port = start_serve(tcpkit_process, "--framing", "length", "--max-message", "1024")
    with connect(port) as client:
        me = peer_name(client)
        client.sendall((1 << 30).to_bytes(4, "big"))
        assert_closed_by_server(client)
    server.wait_for_line(esc(f"disconnect {me}: message too large"))


def test_max_message_does_not_apply_per_read_in_raw_framing(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--max-message", "16")
    with connect(port) as client:
        me = peer_name(client)
        client.sendall(b"m" * 1000)
        # one or more reads, each acknowledged; the connection stays open
        assert recv_exact(client, len(REPLY)) == REPLY
        client.shutdown(socket.SHUT_WR)
        rest, how = recv_until_eof(client)
        assert how is None
        assert len(rest) % len(REPLY) == 0 and rest == REPLY * (len(rest) // len(REPLY))
    server.wait_for_line(esc(f"disconnect {me}: peer closed"))
    assert not find_line(server, r"message too large")


def test_max_conns_refuses_the_extra_connection(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--max-conns", "2")
    a = connect(port)
    b = connect(port)
    try:
        server.wait_for_line(r"\(clients: 2\)")
        extra = connect(port)
        extra_name = peer_name(extra)
        data = assert_closed_by_server(extra)
        extra.close()
        assert data == b""
        wait_log(server, esc(extra_name) + r".*refused: too many connections")
        ack_round_trip(a, b"a", REPLY)
        ack_round_trip(b, b"b", REPLY)
        # when one leaves there is room again
        a_name = peer_name(a)
        a.close()
        wait_log(server, esc(f"disconnect {a_name}: peer closed (clients: 1)"))
        with connect(port) as again:
            ack_round_trip(again, b"room again", REPLY)
    finally:
        a.close()
        b.close()


def test_idle_timeout_closes_idle_connections(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--idle-timeout", "0.3")
    with connect(port) as client:
        me = peer_name(client)
        ack_round_trip(client, b"then silence", REPLY)
        data = assert_closed_by_server(client, timeout=10)
        assert data == b""
    server.wait_for_line(esc(f"disconnect {me}: idle timeout (clients: 0)"))


def test_idle_timeout_spares_connections_that_keep_talking(tcpkit_process):
    """Activity restarts the idle clock: a client that talks every ~0.1 s
    for 2.5 s (well past a 1 s timeout) is never cut off, while an idle
    one beside it is."""
    server, port = start_serve(tcpkit_process, "--idle-timeout", "1")
    idle = connect(port)
    idle_name = peer_name(idle)
    with connect(port) as busy:
        busy_name = peer_name(busy)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            ack_round_trip(busy, b"tick", REPLY)
            time.sleep(0.1)  # pacing of the client, not synchronisation
        wait_log(server, esc(f"disconnect {idle_name}: idle timeout"))
        ack_round_trip(busy, b"still here", REPLY)
    idle.close()
    assert not find_line(server, esc(f"disconnect {busy_name}: idle timeout"))


# --------------------------------------------------------------------------
# Stopping: SIGTERM / SIGINT draining, second signal, restart on the same port


def test_sigterm_drains_then_exits_with_summary(tcpkit_process):
    server, port = start_serve(tcpkit_process)
    client = connect(port)
    me = peer_name(client)
    client.sendall(b"last words")
    # the server has read the message; stop it before the client reads the reply
    server.wait_for_line(esc(f"message from {me}: last words"))
    server.signal(signal.SIGTERM)
    server.wait_for_line(STAMP + esc("stopping: no new connections; draining 1 clients") + "$")
    data, _ = recv_until_eof(client)
    assert data == REPLY
    client.close()
    assert server.wait(timeout=10) == 0
    # the client closed when it saw the server's EOF
    wait_log(server, esc(f"disconnect {me}: ") + r"(peer closed|server stopping) \(clients: 0\)")
    stopped = wait_log(server, STAMP + r"stopped: served (\d+) connections, (\d+) bytes in, "
                                      r"(\d+) bytes out$")
    assert stopped.groups() == ("1", str(len(b"last words")), str(len(REPLY)))
    assert server.stdout_lines[-1] == stopped.string


def test_sigterm_closes_clients_that_stay_connected(tcpkit_process):
    """Draining is bounded: a client that got its reply and the server's
    EOF but never closes is closed by the server (`server stopping`), and
    the server still exits 0 with its summary."""
    server, port = start_serve(tcpkit_process)
    client = connect(port)
    me = peer_name(client)
    ack_round_trip(client, b"hold on", REPLY)
    server.signal(signal.SIGTERM)
    server.wait_for_line(esc("stopping: no new connections; draining 1 clients"))
    # keep the socket open (never close it) until the server is gone
    assert server.wait(timeout=30) == 0
    try:
        data, _ = recv_until_eof(client, timeout=5)
        assert data == b""
    finally:
        client.close()
    wait_log(server, esc(f"disconnect {me}: server stopping (clients: 0)"))
    wait_log(server, esc("stopped: served 1 connections, 7 bytes in, "
                         f"{len(REPLY)} bytes out") + "$")


def test_no_new_connections_after_stopping(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "echo")
    # a client that never reads keeps the server busy draining
    hog = connect(port, rcvbuf=4096)
    server.wait_for_line(r"connect ")
    server.signal(signal.SIGTERM)
    server.wait_for_line(r"stopping: no new connections")
    try:
        with connect(port, timeout=2) as late:
            late.sendall(b"hello?")
            data, _ = recv_until_eof(late, timeout=10)
            assert data == b""
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        pass
    hog.close()
    assert server.wait(timeout=10) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_with_no_clients_exits_zero(tcpkit_process, signum):
    server, port = start_serve(tcpkit_process)
    server.signal(signum)
    assert server.wait(timeout=10) == 0
    assert find_line(server, STAMP + esc("stopping: no new connections; draining 0 clients"))
    assert find_line(server, STAMP + esc("stopped: served 0 connections, 0 bytes in, "
                                         "0 bytes out") + "$")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_exits_at_once(tcpkit_process, signum):
    """While it drains a client that does not read (echo output piling up),
    a second signal makes the server exit promptly."""
    server, port = start_serve(tcpkit_process, "--mode", "echo")
    hog = connect(port, rcvbuf=4096)
    hog.setblocking(False)
    sent = 0
    try:
        # fill both directions until the server stops reading (bounded)
        deadline = time.monotonic() + 5
        blocked = 0
        while sent < (64 << 20) and blocked < 30 and time.monotonic() < deadline:
            try:
                sent += hog.send(bytes(65536))
                blocked = 0
            except BlockingIOError:
                blocked += 1
                time.sleep(0.01)
        server.signal(signum)
        server.wait_for_line(r"stopping: no new connections")
        server.signal(signum)
        code = server.wait(timeout=5)
        assert code in (0, 128 + signum, -signum), code
    finally:
        hog.close()


def pid_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True,
                          timeout=10).returncode == 0


@pytest.mark.skipif(not pid_namespace_available(),
                    reason="unshare --pid needs root (CAP_SYS_ADMIN) and util-linux")
def test_regression_a_second_signal_ends_the_server_also_as_pid_1():
    """In a container the server is PID 1, for which a signal without a
    handler is ignored: the second signal must still end a drain that a
    client holds open (here for up to --drain-timeout 30 s)."""
    port = pick_free_port()
    proc = subprocess.Popen(["unshare", "--pid", "--fork", str(tcpkit_path()), "serve", "--mode",
                             "echo", "--port", str(port), "--drain-timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        deadline = time.monotonic() + scaled(10)
        while client is None and time.monotonic() < deadline:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                time.sleep(0.05)
        assert client is not None, "the server did not start"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        server_pid = int(children[0])
        assert re.search(r"NSpid:\s+\d+\s+1\n", Path(f"/proc/{server_pid}/status").read_text())
        os.kill(server_pid, signal.SIGTERM)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "stopping:" in line:
                break
        assert any("draining 1 clients" in line for line in lines), lines
        os.kill(server_pid, signal.SIGTERM)
        assert proc.wait(timeout=scaled(5)) == 128 + signal.SIGTERM
        client.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("backend", ["epoll", "uring"])
@pytest.mark.parametrize("threads", [0, 2])
def test_regression_serve_runs_no_thread_beyond_its_loops(tcpkit_process, backend, threads):
    """Signals reach the main loop as events (SignalSet), so `serve` has a
    thread per I/O loop and no other: one thread in all without --threads.
    A thread of its own waiting for signals made every system call take the
    kernel's shared-descriptor-table path. The signals still stop it."""
    server, port = start_serve(tcpkit_process, "--mode", "echo", "--io-backend", backend,
                               "--threads", str(threads))
    with connect(port) as client:
        client.sendall(b"ping")
        assert recv_exact(client, 4) == b"ping"
        names = user_threads(server.pid)
        # ThreadSanitizer's runtime starts a thread of its own once a second
        # one exists.
        runtime = 1 if SANITIZER == "thread" and threads > 0 else 0
        assert len(names) == 1 + threads + runtime, names
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0


def test_restart_on_same_port_after_server_closed_live_connections(tcpkit_process):
    """The tutorial's "Address already in use" case: the server closes live
    connections (so its side of each sits in TIME_WAIT) and is started again
    on the same port at once: it must bind."""
    server, port = start_serve(tcpkit_process)
    clients = [connect(port) for _ in range(3)]
    for c in clients:
        ack_round_trip(c, b"hello", REPLY)
    server.signal(signal.SIGTERM)
    for c in clients:
        recv_until_eof(c)  # the server closed first
        c.close()
    assert server.wait(timeout=10) == 0
    assert "06" in tcp_states_on_port(port), "expected TIME_WAIT on the server's port"
    again, again_port = start_serve(tcpkit_process, port=port)
    assert again_port == port
    with connect(port) as c:
        ack_round_trip(c, b"after restart", REPLY)


# --------------------------------------------------------------------------
# Errors


def test_port_in_use_names_the_holder(tcpkit_bin):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        result = run_tcpkit("serve", "--port", port)
    finally:
        holder.close()
    assert result.returncode == 1, result
    assert "already in use" in result.stderr
    assert f"pid {os.getpid()} ({own_process_name()})" in result.stderr
    assert f"tcpkit port {port}" in result.stderr
    assert not any(re.search(LISTENING_RE, line) for line in result.stdout.splitlines())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind well-known ports")
def test_well_known_port_as_non_root_is_explained(tcpkit_bin):
    result = run_tcpkit("serve", "--port", 80)
    assert result.returncode == 1, result
    assert "1024" in result.stderr or "well-known" in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("host", ["999.1.1.1", "nosuchhost.invalid"])
def test_bad_host(tcpkit_bin, host):
    result = run_tcpkit("serve", "--host", host, "--port", 0, timeout=30)
    assert result.returncode in (1, 2), result
    assert host in result.stderr, result.stderr


def test_unknown_encoding_is_a_usage_error(tcpkit_bin):
    result = run_tcpkit("serve", "--port", 0, "--encoding", "klingon-8")
    assert result.returncode == 2, result
    assert "klingon-8" in result.stderr


@pytest.mark.parametrize("flags, says", [
    (["--port", ""], "--port: '' is not a whole number"),
    (["--host", "unix:/tmp/tcpkit-never.sock", "--port", "9000"], "--port does not apply to --host unix:"),
    (["--unix", "/tmp/tcpkit-never.sock", "--host", "127.0.0.2"], "--host excludes --unix"),
    (["--port", "0", "--unix-mode", "600"], "--unix-mode sets a Unix socket file's permissions"),
    (["--unix", "@tcpkit-never", "--unix-mode", "600"], "unix:@tcpkit-never has no file"),
    (["--unix", "/tmp/tcpkit-never.sock", "--allow", "127.0.0.1"], "--allow/--deny judge IP addresses"),
], ids=["empty-port", "port-with-unix-host", "host-with-unix", "unix-mode-on-tcp", "unix-mode-abstract",
        "allow-on-unix"])
def test_regression_flags_that_cannot_apply_are_usage_errors(tcpkit_bin, flags, says):
    # Each was taken silently: an empty --port picked a free port, the port
    # or host beside a Unix socket was ignored, and --allow on a Unix socket
    # started a server that refused every client.
    result = run_tcpkit("serve", *flags)
    assert result.returncode == 2, result
    assert says in result.stderr, result.stderr
    assert not os.path.exists("/tmp/tcpkit-never.sock")


def test_regression_metrics_on_the_servers_own_port_says_so(tcpkit_bin):
    # It named this very process as the one holding the port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_tcpkit("serve", "--port", port, "--metrics", f"127.0.0.1:{port}")
    assert result.returncode == 1, result
    assert f"port {port} is the one this server listens on for clients" in result.stderr, result.stderr


@pytest.mark.parametrize("flag", ["--proxy-timeout", "--idle-timeout", "--drain-timeout",
                                  "--tls-handshake-timeout"])
def test_regression_a_nan_timeout_is_a_usage_error(tcpkit_bin, flag):
    # "nan" passed every range check (each comparison with it is false):
    # --proxy-timeout nan then closed every client at once.
    result = run_tcpkit("serve", "--port", 0, flag, "nan")
    assert result.returncode == 2, result
    assert f"{flag}: 'nan' is not a finite number" in result.stderr, result.stderr


@pytest.mark.parametrize("flags", [
    ["--mode", "bogus"],
    ["--port", "70000"],
    ["--port", "-1"],
    ["--threads", "-1"],
    ["--framing", "bogus"],
    ["--log-format", "xml"],
    ["--idle-timeout", "-1"],
    ["--busy-poll", "-1"],
    ["--busy-poll", "2000000"],
    ["--busy-poll", "soon"],
    # Regression: past 2^64 - 1 the value was taken, and the server ran
    # with no limit at all.
    ["--max-message", "18446744073709551616"],
    ["--max-message", "0"],
    ["--no-such-flag"],
])
def test_bad_flags_are_usage_errors(tcpkit_bin, flags):
    result = run_tcpkit("serve", "--port", 0, *flags) if flags[0] != "--port" else \
        run_tcpkit("serve", *flags)
    assert result.returncode == 2, result
    assert result.stderr.strip(), "a usage error should say what is wrong"


@pytest.mark.parametrize("backend, threads", [("epoll", "0"), ("uring", "0"), ("epoll", "2")])
def test_busy_poll_echoes_every_byte_and_sleeps_when_idle(tcpkit_process, backend, threads):
    """--busy-poll: the loops spin before they sleep, and echo as ever
    (two clients, 1 MiB each, byte-exact); once traffic stops they sleep
    again, so an idle server uses next to no CPU."""
    server, port = start_serve(tcpkit_process, "--mode", "echo", "--busy-poll", "1000", "-q",
                               "--io-backend", backend, "--threads", threads)
    payload = os.urandom(1 << 20)
    clients = [connect(port) for _ in range(2)]
    try:
        for client in clients:
            client.sendall(payload[:1000])
            assert recv_exact(client, 1000) == payload[:1000]
        for client in clients:
            sender = threading.Thread(target=client.sendall, args=(payload,), daemon=True)
            sender.start()
            assert recv_exact(client, len(payload)) == payload
            sender.join(timeout=10)
        time.sleep(0.2)  # the last spin ends within a millisecond
        before = cpu_seconds(server.pid)
        time.sleep(1.0)
        idle = cpu_seconds(server.pid) - before
        assert idle < 0.2, f"{idle:.2f} s of CPU in 1 s without traffic: the loop kept spinning"
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("splice", ["auto", "always"])
def test_regression_a_high_water_mark_of_one_byte_still_echoes_everything(tcpkit_process, splice):
    """Reading resumes once at most half the mark is left: with a mark of 1
    that is nothing. It waited for less than nothing, so the echo stopped
    for good once the client fell behind (at about 4 MB of 12)."""
    _, port = start_serve(tcpkit_process, "--mode", "echo", "--high-water-mark", "1",
                          "--splice", splice, "-q")
    payload = os.urandom(12 << 20)
    with connect(port) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,), daemon=True)
        sender.start()
        time.sleep(0.5)  # everything the kernels take, before any reading
        assert recv_exact(client, len(payload)) == payload
        sender.join(timeout=10)


# --------------------------------------------------------------------------
# --reuse-port


def test_reuse_port_lets_two_servers_share_a_port(tcpkit_process):
    first, port = start_serve(tcpkit_process, "--reuse-port", "--reply", "one")
    second, second_port = start_serve(tcpkit_process, "--reuse-port", "--reply", "two",
                                      port=port)
    assert second_port == port
    seen = set()
    for _ in range(200):  # the kernel spreads connections by hash
        with connect(port) as c:
            c.sendall(b"who?")
            seen.add(recv_exact(c, 3))
        if seen == {b"one", b"two"}:
            break
    assert seen == {b"one", b"two"}


def test_without_reuse_port_the_second_server_fails(tcpkit_process):
    first, port = start_serve(tcpkit_process)
    result = run_tcpkit("serve", "--port", port)
    assert result.returncode == 1, result
    assert "already in use" in result.stderr
    assert f"pid {first.pid} (tcpkit)" in result.stderr


# --- log escaping (design decision 10) --------------------------------------------------------

@pytest.mark.parametrize("encoding, messages, logged", [
    ("gbk", [b"abc\x81", b"\x40def", b"\xa1", b"\xa1x"], ["abc\\x81", "@def", "\\xA1", "\\xA1x"]),
    ("utf-8", [b"abc\xe4", b"\xbd\xa0def"], ["abc\\xe4", "\\xbd\\xa0def"]),
], ids=["gbk", "utf-8"])
def test_regression_each_framed_message_is_decoded_on_its_own(tcpkit_process, encoding, messages,
                                                                logged):
    # A lead byte left at the end of one line was joined with the start of
    # the next ("abc" then "丂def"): lines are whole messages.
    server, port = start_serve(tcpkit_process, "--framing", "line", "--encoding", encoding,
                               "--reply", "ok")
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        for message, want in zip(messages, logged):
            client.sendall(message + b"\n")
            assert recv_exact(client, 3) == b"ok\n"
            match = server.wait_for_line(esc(f"message from {me}: ") + "(.*)$")
            assert match.group(1) == want, (message, match.group(1))


def test_regression_a_typed_escape_is_told_from_a_decoders_in_gbk(tcpkit_process):
    # With an invalid byte in a GBK message the log kept backslashes as
    # typed, so "\x1b" typed after it read like an escaped ESC.
    server, port = start_serve(tcpkit_process, "--encoding", "gbk")
    with connect(port) as client:
        ack_round_trip(client, b"\xff\\x1b[2J " + "乗".encode("gbk"), REPLY.decode().encode("gbk"))
        match = server.wait_for_line(esc(f"message from {peer_name(client)}: ") + "(.*)$")
    assert match.group(1) == r"\xFF\\x1b[2J 乗", match.group(1)


def test_del_c1_bidi_and_backslashes_are_logged_escaped(tcpkit_process):
    """Regression: DEL, C1 controls and bidi overrides reached the log raw,
    and an escape could not be told from the same text typed literally."""
    server, port = start_serve(tcpkit_process)
    with connect(port) as client:
        ack_round_trip(client, "a\x7fb\u0085c\u202ed\u2066e\\x41".encode(), REPLY)
        match = server.wait_for_line(esc(f"message from {peer_name(client)}: ") + "(.*)$")
    assert match.group(1) == r"a\x7fb\u0085c\u202ed\u2066e\\x41"


def test_a_huge_message_of_controls_is_cut_with_a_marker(tcpkit_process):
    """Regression: a 1 MiB message of control bytes became a 4 MiB log line."""
    server, port = start_serve(tcpkit_process, "--framing", "line", "--max-message", str(2 * 1024 * 1024))
    with connect(port) as client:
        client.sendall(b"\x01" * (1024 * 1024) + b"\n")
        recv_exact(client, len(REPLY) + 1)
        match = server.wait_for_line(esc(f"message from {peer_name(client)}: ") + "(.*)$")
    shown = match.group(1)
    assert shown.startswith(r"\x01\x01")
    assert len(shown) < 4200, len(shown)
    left_out = 1024 * 1024 - 1024  # 4096 bytes of log show 1024 escaped bytes
    assert shown.endswith(f"...[{left_out} more bytes]"), shown[-60:]


@pytest.mark.parametrize("flags, says", [
    (["--encoding", "utf-16", "--framing", "line"], "--encoding utf-16 does not write a newline as the one byte"),
    (["--mode", "chat", "--encoding", "UTF-16LE"], "chat needs an encoding that keeps ASCII as it is"),
    (["--encoding", "gbk", "--reply", "ok 😀"], "--reply: '😀' (character 4) has no form in GBK"),
    (["--encoding", "big5", "--reply", "\u202e"], "--reply: '\\u202e' (character 1) has no form in BIG5"),
], ids=["utf16-lines", "utf16-chat", "emoji-in-gbk", "bidi-in-big5"])
def test_regression_text_the_encoding_cannot_carry_is_a_usage_error(tcpkit_bin, flags, says):
    # UTF-16 lines were cut at every 0x0A byte, half of other characters;
    # a reply character the wire encoding lacks went out as "\xHH" text.
    result = run_tcpkit("serve", "--port", "0", *flags)
    assert result.returncode == 2, result
    assert says in result.stderr, result.stderr


def test_regression_a_reply_that_is_not_utf8_is_a_usage_error(tcpkit_bin):
    result = subprocess.run([str(tcpkit_path()), "serve", "--port", "0", "--reply", b"ok\xff"],
                            capture_output=True, timeout=30)
    assert result.returncode == 2, result
    assert b"--reply is not UTF-8: byte 3 is 0xFF" in result.stderr, result.stderr


def test_utf16_is_served_with_length_framing(tcpkit_process):
    """What the usage error suggests works: UTF-16 text framed by length,
    logged decoded and answered in UTF-16."""
    server, port = start_serve(tcpkit_process, "--encoding", "utf-16le", "--framing", "length")
    with connect(port) as client:
        client.sendall(frame("你好\n".encode("utf-16le")))
        assert recv_frame(client) == DEFAULT_REPLY.encode("utf-16le")
        server.wait_for_line(esc(f"message from {peer_name(client)}: 你好") + "$")


@pytest.mark.parametrize("encoding, held, shown", [
    ("utf-8", "你".encode()[:2], r"\xe4\xbd"),
    ("gbk", "你".encode("gbk")[:1], r"\xC4"),
])
def test_regression_a_character_cut_off_by_the_close_is_logged(tcpkit_process, encoding, held, shown):
    # Raw framing holds the start of a character for the next read; when the
    # client closed instead, those bytes were never logged.
    server, port = start_serve(tcpkit_process, "--encoding", encoding)
    with connect(port, nodelay=True) as client:
        me = peer_name(client)
        ack_round_trip(client, b"ab" + held, DEFAULT_REPLY.encode(encoding))
        server.wait_for_line(esc(f"message from {me}: ab") + "$")
    server.wait_for_line(esc(f"disconnect {me}: peer closed"))
    lines = [line for line in server.stdout_lines if me in line]
    assert "disconnect" in lines[-1] and lines[-2].endswith(f": {shown}"), lines

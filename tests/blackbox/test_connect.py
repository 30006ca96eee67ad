"""Black-box tests of `tcpkit connect HOST PORT`: the tutorial's client
(--send), an interactive nc-like session with half-close, GBK text, hex
dumps, and the one-line errors for refused, unresolvable and silent peers.
The other side is the tutorial's Python server (socket module), socat or nc."""

import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import (DEFAULT_TIMEOUT, PeerServer, TcpkitProcess, ipv6_loopback_available,
                      pick_free_port, private_hosts_file_works, run_tcpkit, scaled, strace_works,
                      tcpkit_path, wait_for_listener, wait_for_port)

pytestmark = pytest.mark.usefixtures("tcpkit_bin")

TUTORIAL_REPLY = "收到了你的訊息"


def recv_until_eof(conn: socket.socket) -> bytes:
    """Everything the client sends until its FIN (recv returns b"")."""
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


class TutorialServer(PeerServer):
    """The tutorial's server: one reply per recv(), close when recv() is b""."""

    def __init__(self, reply: bytes = TUTORIAL_REPLY.encode(), **kwargs):
        self.received: list[bytes] = []
        self.reply = reply
        super().__init__(self.serve, **kwargs)

    def serve(self, conn: socket.socket) -> None:
        while data := conn.recv(1024):
            self.received.append(data)
            conn.sendall(self.reply)


# --- the tutorial's client: --send ------------------------------------------------------------

def test_send_once_prints_the_tutorial_reply():
    with TutorialServer() as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--send", "hello")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == TUTORIAL_REPLY + "\n"
    assert result.stderr == ""
    assert b"".join(server.received) == b"hello"


def test_send_several_times_prints_each_reply_in_order():
    def numbered(conn):
        count = 0
        while conn.recv(1024):
            count += 1
            conn.sendall(f"{TUTORIAL_REPLY} #{count}".encode())

    with PeerServer(numbered) as server:
        result = run_tcpkit("connect", "localhost", server.port,
                            "--send", "one", "--send", "two", "--send", "three")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{TUTORIAL_REPLY} #{n}" for n in (1, 2, 3)]


def test_send_line_waits_for_a_whole_line_each_time():
    received = []

    def line_echo(conn):
        buffer = b""
        while data := conn.recv(1024):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                received.append(line)
                # Two writes per reply: --line must wait for the newline.
                conn.sendall(b"echo: ")
                conn.sendall(line + b"\n")

    with PeerServer(line_echo) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--line",
                            "--send", "first", "--send", "second")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: first\necho: second\n"
    assert received == [b"first", b"second"]


def test_send_with_wait_reports_a_missing_reply_and_goes_on():
    def silent(conn):
        recv_until_eof(conn)

    with PeerServer(silent) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--send", "anyone?",
                            "--wait", "0.2")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "no reply to message 1 within 0.2 s" in result.stderr


@pytest.mark.skipif(not ipv6_loopback_available(), reason="IPv6 loopback is not available")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_literal_with_or_without_brackets(host):
    with TutorialServer(host="::1") as server:
        result = run_tcpkit("connect", host, server.port, "--send", "v6")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == TUTORIAL_REPLY + "\n"


# --- encodings --------------------------------------------------------------------------------

def test_gbk_server_reply_prints_as_utf8_and_sent_text_is_gbk():
    def gbk_server(conn):
        while data := conn.recv(1024):
            conn.sendall(("收到了：" + data.decode("gbk")).encode("gbk"))

    with PeerServer(gbk_server) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "gbk",
                            "--send", "你好，服务器")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "收到了：你好，服务器\n"


def test_gbk_character_split_across_two_server_writes_decodes_whole():
    encoded = "你好\n".encode("gbk")  # c4 e3 ba c3 0a

    def split_writer(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(encoded[:1])
        # Only makes a separate read likely; the output is checked either way,
        # and the session waits for the close, so no timing decides the result.
        time.sleep(0.1)
        conn.sendall(encoded[1:])

    with PeerServer(split_writer) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "GBK", input="")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "你好\n"
    assert "\\x" not in result.stdout
    assert "connection closed by peer" in result.stderr


def test_invalid_bytes_in_the_encoding_are_escaped_not_fatal():
    def bad_gbk(conn):
        conn.sendall(b"ok \xff\n")

    with PeerServer(bad_gbk) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "gbk", input="")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok \\xFF\n"


@pytest.mark.parametrize("sends, says", [
    (["ok 😀"], "tcpkit connect: --send: '😀' (character 4) has no form in GBK; give a text GBK can write"),
    (["你好", "ok 😀"], "tcpkit connect: --send #2: '😀' (character 4) has no form in GBK"),
], ids=["one-send", "the-second-of-two"])
def test_regression_a_send_text_the_encoding_cannot_carry_is_a_usage_error(sends, says):
    # A character the wire encoding lacks went out, silently, as the text of
    # its escape ("ok \xF0\x9F\x98\x80"). Now every text is checked before
    # connecting: the server is never reached and nothing is sent.
    server = TutorialServer()
    try:
        args = [arg for text in sends for arg in ("--send", text)]
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "gbk", *args)
    finally:
        server.close()
    assert result.returncode == 2, result
    assert says in result.stderr, result.stderr
    assert server.accepted == 0 and server.received == []


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_regression_a_send_text_that_is_not_utf8_is_a_usage_error(encoding):
    server = TutorialServer()
    try:
        result = subprocess.run([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port),
                                 "--encoding", encoding, "--send", b"ok\xff"],
                                capture_output=True, timeout=scaled(DEFAULT_TIMEOUT))
    finally:
        server.close()
    assert result.returncode == 2, result
    assert b"tcpkit connect: --send is not UTF-8: byte 3 is 0xFF" in result.stderr, result.stderr
    assert server.accepted == 0 and server.received == []


def test_send_texts_gbk_can_write_pass_the_check_and_go_out_in_gbk():
    texts = ["你好，服务器", "ASCII, “引号” and ①", "再见"]
    with TutorialServer(reply=TUTORIAL_REPLY.encode("gbk")) as server:
        args = [arg for text in texts for arg in ("--send", text)]
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "gbk", *args)
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(TUTORIAL_REPLY + "\n")
    assert b"".join(server.received) == "".join(texts).encode("gbk")


# --- interactive sessions ---------------------------------------------------------------------

def test_stdin_eof_half_closes_and_the_final_reply_is_printed():
    got = {}

    def final_reply(conn):
        got["data"] = recv_until_eof(conn)  # ends at tcpkit's FIN
        conn.sendall(b"final reply after your FIN: " + got["data"])

    with PeerServer(final_reply) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, input="hello\nworld\n")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert got["data"] == b"hello\nworld\n"
    assert result.stdout == "final reply after your FIN: hello\nworld\n"
    assert result.stderr.strip() == "connection closed by peer"


def test_interactive_round_trip_while_stdin_stays_open():
    saw_eof = threading.Event()

    def echo_then_bye(conn):
        while data := conn.recv(1024):
            conn.sendall(b"echo: " + data)
        saw_eof.set()
        conn.sendall(b"bye\n")

    with PeerServer(echo_then_bye) as server, \
            TcpkitProcess("connect", "127.0.0.1", server.port, "--line", stdin=True) as client:
        client.send("first line\n")
        client.wait_for_line(r"^echo: first line$", stream="stdout")
        client.send("second ")
        client.send("line\n")
        client.wait_for_line(r"^echo: second line$", stream="stdout")
        assert not saw_eof.is_set()
        client.close_stdin()
        assert client.wait() == 0, client.describe()
        server.wait()
    assert client.stdout_lines[-1] == "bye"
    assert client.stderr_lines == ["connection closed by peer"]



def test_regression_peer_fin_does_not_drop_the_rest_of_stdin():
    got = {}
    first_line = threading.Event()

    def banner_then_read(conn):
        conn.sendall(b"banner\n")
        conn.shutdown(socket.SHUT_WR)  # finished sending, still reading
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
            if b"\n" in data:
                first_line.set()
        got["data"] = data

    with PeerServer(banner_then_read) as server, \
            TcpkitProcess("connect", "127.0.0.1", server.port, stdin=True) as client:
        client.wait_for_line(r"^banner$", stream="stdout")
        client.wait_for_line(r"closed by peer for sending \(FIN\); still sending stdin",
                             stream="stderr")
        client.send("one\n")
        assert first_line.wait(DEFAULT_TIMEOUT)
        client.send("two\n")  # after a pause: the session must still be sending
        client.close_stdin()
        assert client.wait() == 0, client.describe()
        server.wait()
    assert got["data"] == b"one\ntwo\n"


def test_at_a_terminal_the_peers_fin_ends_the_session():
    """Typed input goes to a person's conversation with the server: when the
    server closes, the session ends (exit 0), as it always did, instead of
    waiting at a prompt for input that can go nowhere."""
    import pty

    def banner_then_close(conn):
        conn.sendall(b"bye\n")

    master, slave = pty.openpty()
    try:
        with PeerServer(banner_then_close) as server:
            proc = subprocess.Popen([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port)],
                                    stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = proc.communicate(timeout=DEFAULT_TIMEOUT)
            server.wait()
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert out == b"bye\n"
    assert err.decode().strip() == "connection closed by peer", err


def test_regression_a_reset_after_the_peers_fin_is_reported():
    import struct
    first_line = threading.Event()

    def banner_then_reset(conn):
        conn.sendall(b"banner\n")
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while b"\n" not in data:
            data += conn.recv(4096)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first_line.set()  # the handler's return closes conn: an RST

    with PeerServer(banner_then_reset) as server, \
            TcpkitProcess("connect", "127.0.0.1", server.port, stdin=True) as client:
        client.wait_for_line(r"^banner$", stream="stdout")
        client.send("one\n")
        assert first_line.wait(DEFAULT_TIMEOUT)
        server.wait()
        try:
            client.send("two\n")
        except BrokenPipeError:
            pass  # tcpkit already saw the reset and exited
        assert client.wait() == 1, client.describe()
    assert any(re.search(rf"(lost|cannot send to 127\.0\.0\.1:{server.port}): "
                         r".*(reset|broken pipe)", line) for line in client.stderr_lines), \
        client.describe()

def test_interactive_gbk_encodes_stdin():
    got = {}

    def capture(conn):
        got["data"] = recv_until_eof(conn)
        conn.sendall("好的".encode("gbk"))

    with PeerServer(capture) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "gbk",
                            input="中文输入\n")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert got["data"] == "中文输入\n".encode("gbk")
    assert result.stdout == "好的"


@pytest.mark.parametrize("line_mode", [[], ["--line"]], ids=["bytes", "line"])
@pytest.mark.parametrize("stdin, says", [
    ("ok 你好\nhi 😀 there\nnever sent\n".encode(), "stdin line 2: '😀' has no form in GBK (byte 4 of the line)"),
    (b"ok\nbad \xff\xfe\nnever sent\n", "stdin line 2: byte 0xFF is not UTF-8 (byte 5 of the line)"),
    ("ok\ncut short \u4e16".encode()[:-1], "stdin line 2: byte 0xE4 is not UTF-8 (byte 11 of the line)"),
], ids=["emoji", "invalid-utf8", "cut-at-eof"])
def test_regression_interactive_stdin_the_encoding_cannot_carry_is_refused(line_mode, stdin, says):
    # A character the wire encoding lacks, and bytes that are not UTF-8, went
    # out silently as the text of their escapes ("hi \xF0\x9F\x98\x80"),
    # exit status 0. As with --send, that text is not sent: the lines before
    # it are, its line and the rest of stdin are not, and the status is 1.
    got = {}

    def capture(conn):
        got["data"] = recv_until_eof(conn)

    with PeerServer(capture) as server:
        result = subprocess.run([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port),
                                 "--encoding", "gbk", *line_mode], input=stdin,
                                capture_output=True, timeout=scaled(DEFAULT_TIMEOUT))
        server.wait()
    assert result.returncode == 1, result
    stderr = result.stderr.decode()
    assert f"tcpkit connect: {says}; that line and the rest of stdin were not sent" in stderr, stderr
    sent = "ok 你好\n" if "你好" in stdin.decode(errors="replace") else "ok\n"
    if not line_mode and says.startswith("stdin line 2: byte 0xE4"):
        # Without --line stdin goes out as it is read: only the end of
        # input shows the last character cut short, after its line's start went.
        sent += "cut short "
    assert got["data"] == sent.encode("gbk"), got


def test_wait_bounds_the_time_after_stdin_eof():
    release = threading.Event()

    def never_closes(conn):
        recv_until_eof(conn)
        conn.sendall(b"late words\n")
        release.wait(DEFAULT_TIMEOUT)

    with PeerServer(never_closes) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--wait", "1", input="x")
        release.set()
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "late words\n"
    assert "connection closed by peer" not in result.stderr


def test_wait_zero_exits_right_after_stdin_is_sent():
    got = {}
    release = threading.Event()

    def never_closes(conn):
        got["data"] = recv_until_eof(conn)
        release.wait(DEFAULT_TIMEOUT)

    with PeerServer(never_closes) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--wait", "0", "-N",
                            input="fire and forget\n")
        release.set()
        server.wait()
    assert result.returncode == 0, result.stderr
    assert got["data"] == b"fire and forget\n"


def test_no_shutdown_keeps_the_write_side_open_until_exit():
    def after_eof(conn):
        buffer = b""
        while b"\n" not in buffer:
            buffer += conn.recv(1024)
        conn.sendall(b"ack\n")
        recv_until_eof(conn)
        # With a FIN after stdin's end tcpkit would still be reading and print
        # this; with --no-shutdown the EOF comes only when tcpkit exits.
        try:
            conn.sendall(b"after eof\n")
        except OSError:
            pass

    with PeerServer(after_eof) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--no-shutdown", "--wait", "1",
                            input="hello\n")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ack\n"


def connect_reading_one_byte(port: int, stdin) -> tuple[int, str]:
    """`tcpkit connect` whose stdout's reader takes one byte ("x") and goes
    away, as `| head -c 1` does: its exit status and stderr."""
    proc = subprocess.Popen([str(tcpkit_path()), "connect", "127.0.0.1", str(port)],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"x"
    proc.stdout.close()
    code = proc.wait(timeout=DEFAULT_TIMEOUT)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    return code, stderr


def test_closed_stdout_is_not_a_sigpipe_death():
    def firehose(conn):
        chunk = b"x" * 65536
        try:
            for _ in range(1024):  # at most 64 MiB, far more than any pipe holds
                conn.sendall(chunk)
        except OSError:
            pass  # tcpkit went away, as expected

    with PeerServer(firehose) as server:
        code, stderr = connect_reading_one_byte(server.port, subprocess.DEVNULL)
        server.wait()
    assert code == 0, stderr
    assert stderr == ""


def test_regression_an_upload_goes_on_after_stdout_s_reader_goes_away(tmp_path):
    """`tcpkit connect ... < file | head -c 1`: the first byte of the reply
    closed the pipe, and the upload stopped there (the server got about
    190 KB of 50 MB, then a reset) with exit 0. As nc -N does, piped stdin
    now goes to its end, what the peer says after is dropped, and the exit
    status says the upload arrived whole."""
    upload = os.urandom(4 * 1024 * 1024)
    source = tmp_path / "upload.bin"
    source.write_bytes(upload)
    got = bytearray()

    def greet_then_read(conn):
        conn.sendall(b"x" * (1024 * 1024))  # more than the pipe holds
        while data := conn.recv(65536):
            got.extend(data)

    with PeerServer(greet_then_read) as server, open(source, "rb") as stdin:
        code, stderr = connect_reading_one_byte(server.port, stdin)
        server.wait()
    assert code == 0, stderr
    assert len(got) == len(upload) and bytes(got) == upload, f"{len(got)} of {len(upload)} bytes"


class RecordingServer(PeerServer):
    """Sends `greeting`, answers the first bytes it gets with `answer`, and
    records all that arrives until the client's FIN (or a quiet second)."""

    def __init__(self, greeting: bytes = b"", answer: bytes = b""):
        self.greeting, self.answer = greeting, answer
        self.received = b""
        super().__init__(self.serve)

    def serve(self, conn):
        for line in self.greeting.splitlines(keepends=True):
            conn.sendall(line)
            time.sleep(0.1)  # one read each: either descriptor may take it
        conn.settimeout(scaled(1))
        try:
            while chunk := conn.recv(4096):
                if not self.received:
                    conn.sendall(self.answer)
                self.received += chunk
        except OSError:
            pass


@pytest.mark.parametrize("closed, args, greeting, answer, sent", [
    (0, [], b"msg0\nmsg1\nmsg2\nmsg3\n", b"", b""),
    (1, ["--line", "--send", "hello"], b"", b"hi\n", b"hello\n"),
    (2, ["--send", "hello", "--wait", "0.3"], b"", b"", b"hello"),
], ids=["stdin", "stdout", "stderr"])
def test_regression_a_closed_standard_descriptor_is_not_the_socket(closed, args, greeting, answer,
                                                                    sent):
    # Started with fd 0, 1 or 2 closed, the socket took that number: tcpkit
    # sent the server its own greeting back as "stdin", or printed the reply
    # or its diagnostics ("no reply to message 1") into the connection.
    with RecordingServer(greeting, answer) as server:
        proc = subprocess.run([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port), *args],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              preexec_fn=lambda: os.close(closed), timeout=scaled(DEFAULT_TIMEOUT))
        server.wait()
    assert proc.returncode == 0, proc.stderr
    assert server.received == sent
    if closed == 0:
        assert proc.stdout == greeting


def test_regression_a_non_blocking_stdout_waits_for_a_slow_reader():
    # A stdout pipe left in O_NONBLOCK (shared with node.js, say) fails a
    # write with EAGAIN when full: that was "cannot write to stdout", exit 1.
    payload = os.urandom(4 * 1024 * 1024)

    def send_all_then_close(conn):
        conn.sendall(payload)

    with PeerServer(send_all_then_close) as server:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        proc = subprocess.Popen([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port)],
                                stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE)
        os.close(write_end)
        time.sleep(0.5)  # a slow reader: the pipe is full by now
        with os.fdopen(read_end, "rb") as reader:
            got = reader.read()
        code = proc.wait(timeout=scaled(DEFAULT_TIMEOUT))
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        server.wait()
    assert code == 0, stderr
    assert got == payload


# --- hex dump ---------------------------------------------------------------------------------

def test_hex_dump_format():
    payload = b"0123456789abcdef\x00\x01Hi\xfe\xff\n"

    def binary_reply(conn):
        conn.recv(1024)
        conn.sendall(payload)
        recv_until_eof(conn)

    with PeerServer(binary_reply) as server:
        # --line makes the reply one block: the dump is per read otherwise.
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--hex", "--line", "--send", "x")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "00000000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|\n"
        "00000010  00 01 48 69 fe ff 0a                              |..Hi...|\n")


def test_hex_dump_offsets_continue_across_reads():
    payload = bytes(range(256)) * 3

    def binary_close(conn):
        conn.sendall(payload)

    with PeerServer(binary_close) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--hex", input="")
        server.wait()
    assert result.returncode == 0, result.stderr
    row = re.compile(r"^([0-9a-f]{8})  ((?:[0-9a-f]{2} |   ){8}) ((?:[0-9a-f]{2} |   ){8}) \|(.*)\|$")
    data, expected_offset = b"", 0
    for line in result.stdout.splitlines():
        match = row.match(line)
        assert match, line
        assert int(match.group(1), 16) == expected_offset
        chunk = bytes.fromhex(match.group(2) + match.group(3))
        assert match.group(4) == "".join(chr(b) if 0x20 <= b < 0x7f else "." for b in chunk)
        data += chunk
        expected_offset += len(chunk)
    assert data == payload


# --- errors: one line, the right exit code ----------------------------------------------------

def test_refused_port_is_one_line_and_exit_1():
    port = pick_free_port()
    result = run_tcpkit("connect", "127.0.0.1", port, "--send", "hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"tcpkit connect: cannot connect to 127.0.0.1:{port}: connection refused — "
        f"is a server running? (try: tcpkit port {port})"]


@pytest.mark.skipif(not strace_works(),
                    reason="holding connect() back until the reset needs strace, and ptrace allowed")
def test_regression_a_reset_right_after_accept_says_the_server_reset_it():
    # A server that accepts and resets at once (SO_LINGER 0) completes the
    # handshake, so the reset is not a refusal; the message said only
    # "cannot connect ...: connection reset by peer". strace holds connect()
    # back until the reset has come, so the error is connect's every time.
    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    asan_options = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    delay_us = int(scaled(0.3) * 1e6)
    with PeerServer(reset) as server:
        result = subprocess.run(
            ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=connect",
             "-e", f"inject=connect:delay_exit={delay_us}", str(tcpkit_path()), "connect",
             "127.0.0.1", str(server.port), "--send", "hi"],
            capture_output=True, text=True, timeout=scaled(DEFAULT_TIMEOUT),
            env={**os.environ, "ASAN_OPTIONS": asan_options})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"tcpkit connect: cannot connect to 127.0.0.1:{server.port}: connection reset by peer — "
        "the server took the connection and reset it before a byte was exchanged (it may turn "
        "this client away, or have stopped listening)"]


def test_unresolvable_host_is_one_line_and_exit_1():
    result = run_tcpkit("connect", "nosuchhost.invalid", 80, "--send", "hi")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tcpkit connect: cannot resolve 'nosuchhost.invalid'")


@pytest.mark.parametrize("port", ["abc", "0", "65536", "80x", ""])
def test_bad_port_is_a_usage_error(port):
    result = run_tcpkit("connect", "127.0.0.1", port)
    assert result.returncode == 2
    assert f"'{port}' is not a port" in result.stderr


@pytest.mark.parametrize("flag", ["--wait", "--timeout"])
def test_regression_a_nan_wait_is_a_usage_error(flag):
    result = run_tcpkit("connect", "127.0.0.1", 80, flag, "nan")
    assert result.returncode == 2
    assert f"{flag}: 'nan' is not a finite number" in result.stderr


@pytest.mark.parametrize("command, flag, value, says", [
    ("connect", "--timeout", "1e10", "1e10 is out of range (give 0.001 to 1000000 seconds)"),
    ("connect", "--wait", "1e300", "1e300 is out of range (give 0 to 1000000 seconds)"),
    ("connect", "--wait", "0.0004", "0.0004 is less than a millisecond"),
    ("connect", "--timeout", "0", "0 is out of range (give 0.001 to 1000000 seconds)"),
    ("bench", "--duration", "1e10", "1e10 is out of range (give 0.001 to 1000000 seconds)"),
    ("bench", "--connect-timeout", "0.0001", "0.0001 is out of range"),
    ("serve", "--drain-timeout", "2e6", "2e6 is out of range (give 0 to 1000000 seconds)"),
])
def test_regression_seconds_that_overflow_or_round_to_zero_are_usage_errors(command, flag, value, says):
    # --timeout 1e10 overflowed the deadline and "timed out" at once without
    # trying; --wait 1e10 dropped the reply; --wait 0.0004 rounded to 0 ms,
    # which means "don't wait"; bench -d 1e10 measured nothing; and the range
    # errors printed a 309-digit upper bound.
    where = ["127.0.0.1", "9"] if command != "serve" else ["--port", "0"]
    result = run_tcpkit(command, *where, flag, value)
    assert result.returncode == 2, result
    assert f"{flag}: {says}" in result.stderr, result.stderr
    assert "179769" not in result.stderr


@pytest.mark.parametrize("args", [["unix:"], ["unix:@"], ["--unix", "@"], ["--unix", ""]])
def test_regression_a_missing_unix_socket_path_is_a_usage_error(args):
    result = run_tcpkit("connect", *args, "--send", "hi")
    assert result.returncode == 2, result
    assert "the socket path is missing" in result.stderr, result.stderr
    assert "not an IPv4 or IPv6 address" not in result.stderr


def test_unknown_encoding_is_a_usage_error_naming_it():
    result = run_tcpkit("connect", "127.0.0.1", 80, "--encoding", "no-such-enc")
    assert result.returncode == 2
    assert "unknown encoding 'no-such-enc'" in result.stderr


def test_no_shutdown_and_n_exclude_each_other():
    result = run_tcpkit("connect", "127.0.0.1", 80, "-N", "--no-shutdown")
    assert result.returncode == 2


def test_connect_timeout_against_a_full_backlog():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: one queued connection fills it
    port = listener.getsockname()[1]
    fillers = []
    try:
        # Linux drops a SYN while the accept queue is full, so a connect then
        # hangs like one to a silent host. A few tries, until one hangs.
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.settimeout(0.5)
            try:
                filler.connect(("127.0.0.1", port))
            except (socket.timeout, TimeoutError):
                break
        else:
            pytest.skip("this kernel keeps accepting connections beyond a full backlog")
        started = time.monotonic()
        result = run_tcpkit("connect", "127.0.0.1", port, "--timeout", "1", "--send", "hi")
        elapsed = time.monotonic() - started
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"tcpkit connect: cannot connect to 127.0.0.1:{port}: "
                               "timed out after 1 s")
    assert elapsed < DEFAULT_TIMEOUT


def blackhole_listener(host: str, port: int):
    """A listener on host:port whose full accept queue makes Linux drop
    SYNs, so a connect hangs as to a silent host; (listener, fillers), or
    None when this kernel keeps accepting."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, port))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        fillers.append(filler)
        filler.settimeout(0.5)
        try:
            filler.connect((host, port))
        except (socket.timeout, TimeoutError):
            return listener, fillers
    for sock in [listener, *fillers]:
        sock.close()
    return None


@pytest.mark.skipif(not private_hosts_file_works(),
                    reason="a private /etc/hosts needs unshare -m and mount --bind (root)")
def test_regression_each_address_of_a_name_gets_the_whole_timeout(tmp_path):
    # The first address could use the whole --timeout, so the second was
    # never tried; the error still said "(tried A, B)" with A's failure only.
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 twohost\n127.0.0.1 twohost\n")

    def connect(port):
        # The resolver sorts 127.0.0.1 (here: silent) first.
        script = 'mount --bind "$1" /etc/hosts && exec "$2" connect twohost "$3" --timeout 1 --send hi'
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(hosts),
                               str(tcpkit_path()), str(port)],
                              capture_output=True, text=True, timeout=scaled(DEFAULT_TIMEOUT))

    with TutorialServer(b"ok", host="127.0.0.2") as server:
        port = server.port
        hole = blackhole_listener("127.0.0.1", port)
        if hole is None:
            pytest.skip("this kernel keeps accepting connections beyond a full backlog")
        try:
            answered = connect(port)
            server.close()
            refused = connect(port)
        finally:
            for sock in [hole[0], *hole[1]]:
                sock.close()
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == "ok\n"
    assert refused.returncode == 1
    assert refused.stderr == (
        f"tcpkit connect: cannot connect to twohost:{port}: 127.0.0.1:{port} timed out after 1 s; "
        f"127.0.0.2:{port} connection refused — is a server running? (try: tcpkit port "
        f"{port})\n")


# --- real peers: socat and nc -----------------------------------------------------------------

@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_round_trip_with_socat_exec_cat():
    port = pick_free_port()
    socat = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                              "EXEC:cat"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port)
        result = run_tcpkit("connect", "127.0.0.1", port, input="hello socat\n第二行\n")
    finally:
        socat.terminate()
        socat.wait(timeout=DEFAULT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello socat\n第二行\n"
    assert "connection closed by peer" in result.stderr


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")
def test_send_to_nc_listener():
    port = pick_free_port()
    nc = subprocess.Popen(["nc", "-l", "127.0.0.1", str(port)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_listener(port)  # nc -l serves one connection: do not probe it
        nc.stdin.write(b"hello from nc\n")
        nc.stdin.flush()
        result = run_tcpkit("connect", "127.0.0.1", port, "--line", "--send", "hello from tcpkit")
        nc_out, _ = nc.communicate(timeout=DEFAULT_TIMEOUT)
    finally:
        if nc.poll() is None:
            nc.kill()
            nc.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from nc\n"
    assert nc_out == b"hello from tcpkit\n"


# --- hostile peers: bounded memory (DESIGN.md, decision 10) -----------------------------------

def flood_without_newline(sent: dict, limit_mib: int = 64):
    """A peer that answers with megabytes of one line that never ends;
    `sent` gets the bytes it managed to send before tcpkit gave up."""
    def handler(conn):
        conn.recv(1024)
        chunk = b"A" * 65536
        sent["bytes"] = 0
        try:
            for _ in range(limit_mib * 16):
                conn.sendall(chunk)
                sent["bytes"] += len(chunk)
        except OSError:
            pass  # tcpkit closed the connection, as it should
    return handler


def test_regression_line_reply_without_newline_stops_at_max_line():
    sent = {}
    with PeerServer(flood_without_newline(sent)) as server:
        started = time.monotonic()
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--line", "--send", "hi",
                            timeout=30)
        elapsed = time.monotonic() - started
        server.wait(30)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "sent a line over 1048576 bytes (--max-line)" in result.stderr
    # It stopped after about the limit, not at the end of the flood.
    assert sent["bytes"] < 32 * 1024 * 1024
    assert elapsed < scaled(10)


@pytest.mark.parametrize("reply,code", [(b"0123456789\n", 0), (b"0123456789\r\n", 0),
                                        (b"01234567890\n", 1)])
def test_regression_max_line_counts_the_bytes_before_the_newline(reply, code):
    def line_reply(conn):
        conn.recv(1024)
        conn.sendall(reply)
        recv_until_eof(conn)

    with PeerServer(line_reply) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--line", "--max-line", "10",
                            "--send", "hi")
        server.wait()
    assert result.returncode == code, result.stderr
    if code:
        assert "over 10 bytes (--max-line)" in result.stderr
    else:
        assert result.stdout.rstrip("\r\n") == "0123456789"


def test_regression_line_stdin_without_newline_stops_at_max_line():
    got = {}

    def capture(conn):
        got["data"] = recv_until_eof(conn)

    with PeerServer(capture) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--line", "--max-line", "1000",
                            input="short line\n" + "x" * 4 * 1024 * 1024)
        server.wait()
    assert result.returncode == 1, result.stderr
    assert "a line of stdin is over 1000 bytes (--max-line); it was not sent" in result.stderr
    assert b"x" * 1001 not in got["data"]


@pytest.mark.parametrize("sent, code", [
    ([b"ok\n", b"0123456789\n"], 0),
    ([b"ok\n", b"01234", b"56789\r", b"\n"], 0),  # split across reads, "\r\n" ends it
    ([b"ok\n", b"01234", b"567890\n"], 1),
    ([b"ok\n", b"x" * 100], 1),  # unfinished, and already too long
], ids=["fits", "fits-in-pieces", "over-in-pieces", "over-unfinished"])
def test_regression_interactive_line_from_the_peer_stops_at_max_line(sent, code):
    # Help and man page promise it "from the peer or from stdin"; only
    # stdin's lines were checked interactively.
    def pieces(conn):
        for piece in sent:
            conn.sendall(piece)
            time.sleep(0.05)
        recv_until_eof(conn)

    with PeerServer(pieces) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--line", "--max-line", "10",
                            input="hi\n")
        server.wait()
    assert result.returncode == code, result.stderr
    if code:
        # Bytes are printed as they come: a part that came before the line
        # was over the limit is out already, the rest of it is not.
        assert result.stdout.startswith("ok\n"), result.stdout
        assert "567890" not in result.stdout and "x" * 11 not in result.stdout
        assert (f"tcpkit connect: 127.0.0.1:{server.port} sent a line over 10 bytes (--max-line); "
                "closing the connection\n") in result.stderr
    else:
        assert result.stdout.replace("\r", "") == "ok\n0123456789\n"


def test_regression_max_line_zero_is_a_clear_usage_error():
    # CLI::PositiveNumber said "0 not in range [1 - 1797693...]" (309 digits).
    result = run_tcpkit("connect", "127.0.0.1", 9, "--line", "--max-line", "0", "--send", "x")
    assert result.returncode == 2, result
    assert "--max-line: must be at least 1" in result.stderr, result.stderr
    assert "179769" not in result.stderr


def test_regression_utf16_texts_are_one_stream_with_one_byte_order_mark():
    # Each --send text was finished as a stream of its own: a BOM before each.
    got = {}

    def capture(conn):
        got["data"] = recv_until_eof(conn)

    with PeerServer(capture) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--encoding", "UTF-16",
                            "--send", "a", "--send", "b", "--wait", "0")
        server.wait()
    assert result.returncode == 0, result.stderr
    assert got["data"].decode("utf-16") == "ab", got["data"]


class SlowReaderAfterBanner(PeerServer):
    """Greets with a banner (as SMTP does), then reads slowly through a
    small receive buffer, or resets the connection after 4 KiB (`reset`)."""

    def __init__(self, reset: bool = False):
        self.reset = reset
        self.received = 0
        self.clean_eof = False
        super().__init__(self.serve)

    def serve(self, conn):
        conn.sendall(b"220 banner\r\n")
        time.sleep(0.3)  # the client has sent all and closed by now
        try:
            while chunk := conn.recv(4096):
                self.received += len(chunk)
                if self.reset and self.received >= 4096:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                time.sleep(0.001)
            self.clean_eof = True
        except OSError:
            pass

    def _serve(self) -> None:
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        super()._serve()


@pytest.mark.parametrize("reset", [False, True], ids=["slow-reader", "reset"])
def test_regression_send_with_wait_zero_delivers_everything_before_closing(reset):
    # close() with the unread banner was a reset that dropped the unsent
    # rest of the text: the server got 4 KiB of 120 kB, tcpkit exited 0.
    text = "a" * 120000
    with SlowReaderAfterBanner(reset) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--send", text, "--wait", "0")
        server.wait()
    if reset:
        assert result.returncode == 1, result.stderr
        assert f"127.0.0.1:{server.port} did not take all that was sent" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert server.received == len(text) and server.clean_eof


# --- --idle-timeout: a peer that neither talks nor reads ---------------------------------------

def holds_without_reading(release: threading.Event):
    """A server that takes the connection and then neither reads nor sends."""
    def handler(conn):
        release.wait(DEFAULT_TIMEOUT)
    return handler


def test_idle_timeout_ends_an_upload_the_peer_stopped_reading():
    # Without it the session waited for the peer forever: stdin is read only
    # as fast as the peer takes it, so its end never came.
    release = threading.Event()
    with PeerServer(holds_without_reading(release)) as server:
        result = subprocess.run([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port),
                                 "--idle-timeout", "0.5"], input=b"u" * (64 << 20),
                                capture_output=True, timeout=scaled(DEFAULT_TIMEOUT))
        release.set()
        server.wait()
    assert result.returncode == 1, result.stderr
    assert (f"nothing sent to or received from 127.0.0.1:{server.port} for 0.5 s "
            "(--idle-timeout)").encode() in result.stderr


def test_idle_timeout_ends_a_silent_session_and_each_byte_starts_it_again():
    release = threading.Event()
    ticks = 4

    def ticks_then_silence(conn):
        for i in range(ticks):
            time.sleep(scaled(0.3))
            conn.sendall(f"tick {i}\n".encode())
        release.wait(DEFAULT_TIMEOUT)

    with PeerServer(ticks_then_silence) as server:
        # stdin stays open and silent, as a terminal's would.
        client = subprocess.Popen([str(tcpkit_path()), "connect", "127.0.0.1", str(server.port),
                                   "-i", str(scaled(1.0))], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = client.communicate(timeout=scaled(DEFAULT_TIMEOUT))
        finally:
            client.kill()
            release.set()
        server.wait()
    assert client.returncode == 1, err
    # The ticks came closer together than the idle time: every one arrived
    # although the whole session lasted longer than that time.
    assert out.decode() == "".join(f"tick {i}\n" for i in range(ticks))
    assert b"(--idle-timeout)" in err


def test_idle_timeout_bounds_the_wait_for_a_reply_that_never_comes():
    release = threading.Event()

    def reads_but_never_answers(conn):
        conn.recv(1024)
        release.wait(DEFAULT_TIMEOUT)

    with PeerServer(reads_but_never_answers) as server:
        result = run_tcpkit("connect", "127.0.0.1", server.port, "--send", "anyone there?",
                            "--idle-timeout", "0.5")
        release.set()
        server.wait()
    assert result.returncode == 1, result.stderr
    assert f"for 0.5 s (--idle-timeout)" in result.stderr


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_bad_idle_timeout_is_a_usage_error(value):
    result = run_tcpkit("connect", "127.0.0.1", "9", "--idle-timeout", value)
    assert result.returncode == 2, result.stderr
    assert "--idle-timeout" in result.stderr

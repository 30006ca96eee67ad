"""Black-box tests of `tcpkit serve --mode chat`: a line-based chat room.

Every line one client sends goes to every other client as `<NAME> TEXT`;
NAME is the sender's address:port until it sets one with `/nick NAME`.
Others are told `* NAME joined (N online)`, `* NAME left` and
`* OLD is now known as NEW`; the member who renamed itself, `* you are now
known as NEW`. A client that does not read is dropped once its
queue passes the high-water mark, and nobody else loses a line. A member's
lines enter the room at --chat-rate lines a second after a burst of as
many (flood control); the rest wait, in order.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import urllib.request

import pytest

from conftest import run_tcpkit, scaled, wait_until
from serve_util import ChatClient, count_lines, find_line, recv_line, recv_until_eof, start_serve, wait_log

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


def esc(text: str) -> str:
    return re.escape(text)


def test_chat_three_clients_nick_join_leave(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "chat")
    assert "(mode chat, framing line," in server.stdout_lines[0], server.stdout_lines[0]

    a = ChatClient(port)
    server.wait_for_line(esc(f"connect {a.name} (clients: 1)"))
    b = ChatClient(port)
    server.wait_for_line(esc(f"connect {b.name} (clients: 2)"))
    a.expect(f"* {b.name} joined (2 online)")
    c = ChatClient(port)
    server.wait_for_line(esc(f"connect {c.name} (clients: 3)"))
    a.expect(f"* {c.name} joined (3 online)")
    b.expect(f"* {c.name} joined (3 online)")

    a.say("hello everyone")
    b.expect(f"<{a.name}> hello everyone")
    c.expect(f"<{a.name}> hello everyone")

    # a line cut into two sends is still one line
    b.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    b.sock.sendall(b"hel")
    b.sock.sendall(b"lo back\n")
    a.expect(f"<{b.name}> hello back")
    c.expect(f"<{b.name}> hello back")

    a.say("/nick alice")
    a.expect("* you are now known as alice")
    b.expect(f"* {a.name} is now known as alice")
    c.expect(f"* {a.name} is now known as alice")
    a.say("hi from alice")
    b.expect("<alice> hi from alice")
    c.expect("<alice> hi from alice")

    c.say("你好")
    a.expect(f"<{c.name}> 你好")
    b.expect(f"<{c.name}> 你好")

    b_name = b.name
    b.close()
    server.wait_for_line(esc(f"disconnect {b_name}: peer closed (clients: 2)"))
    a.expect(f"* {b_name} left")
    c.expect(f"* {b_name} left")

    c.say("bye")
    a.expect(f"<{c.name}> bye")
    # a got nothing of its own but its nick's confirmation: no echo of its lines
    a.expect_silence()

    a.close()
    c.expect("* alice left")
    c.close()
    server.wait_for_line(r"\(clients: 0\)$")
    # chat mode does not log every message
    assert not find_line(server, r" message from ")


def test_chat_slow_reader_is_dropped_and_nobody_else_loses_a_line(tcpkit_process):
    """A client that never reads while others talk a lot: its queue passes
    the high-water mark, it is disconnected with `slow reader`, and the
    readers that keep up receive every line in order. The sender floods on
    purpose, so flood control is off (--chat-rate 0)."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--chat-rate", "0")
    sender = ChatClient(port)
    readers = [ChatClient(port), ChatClient(port)]
    slow = ChatClient(port, rcvbuf=4096)
    wait_log(server, r"\(clients: 4\)")
    # read the join notices off so the readers' streams start clean
    sender.expect(*(f"* {r.name} joined ({n} online)" for r, n in
                    ((readers[0], 2), (readers[1], 3), (slow, 4))))
    readers[0].expect(f"* {readers[1].name} joined (3 online)",
                      f"* {slow.name} joined (4 online)")
    readers[1].expect(f"* {slow.name} joined (4 online)")

    received = [[] for _ in readers]  # sequence numbers each reader got
    others = [[] for _ in readers]    # everything else each reader got
    errors = []
    prefix = f"<{sender.name}> "

    def read_all(i: int) -> None:
        reader = readers[i]
        try:
            while True:
                line = reader.line(timeout=30)
                if line.startswith(prefix):
                    body = line[len(prefix):]
                    if body == "END":
                        return
                    received[i].append(int(body.split(" ", 1)[0]))
                else:
                    others[i].append(line)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=read_all, args=(i,), daemon=True)
               for i in range(len(readers))]
    for t in threads:
        t.start()

    slow_pattern = esc(f"disconnect {slow.name}: slow reader (output over high-water mark)")
    lines_per_chunk = 1000
    filler = "x" * 90
    sent = 0
    sent_bytes = 0
    # bounded: at most ~20 MiB in all, and stop as soon as the log says it
    while sent_bytes < (20 << 20) and not find_line(server, slow_pattern):
        chunk = "".join(f"{sent + k:08d} {filler}\n" for k in range(lines_per_chunk))
        sender.sock.sendall(chunk.encode())
        sent += lines_per_chunk
        sent_bytes += len(chunk)
        # pace the sender by the readers so that only the slow client falls behind
        target = sent
        wait_until(lambda: errors or all(len(r) >= target for r in received), timeout=20,
                   message=f"readers to get {target} lines")
        assert not errors, errors
    wait_log(server, slow_pattern + r" \(clients: 3\)", timeout=10)

    # the slow client's connection is closed (after what was already queued)
    recv_until_eof(slow.sock, timeout=30)
    slow.close()

    sender.say("END")
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for i in range(len(readers)):
        assert received[i] == list(range(sent)), f"reader {i} lost or reordered lines"
        assert others[i] == [f"* {slow.name} left"], others[i]
    sender.expect(f"* {slow.name} left")
    assert count_lines(server, r"slow reader") == 1
    for c in [sender, *readers]:
        c.close()
    server.wait_for_line(r"\(clients: 0\)$", timeout=10)
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0


def test_chat_members_joining_at_once_hear_of_exactly_the_joins_after_their_own(tcpkit_process):
    """Twelve members join at once on three I/O loops. Each join is counted in
    the same step that picks who hears of it, so the counts are 1 to 12, each
    member hears of exactly the joins counted after its own, and nobody hears
    of a join that happened before it (as "* X joined (1 online)" would be)."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--threads", "3")
    total = 12
    members: list = [None] * total
    start = threading.Barrier(total)
    errors = []

    def join(i: int) -> None:
        try:
            start.wait(timeout=10)
            members[i] = ChatClient(port)
        except BaseException as e:
            errors.append(e)

    joiners = [threading.Thread(target=join, args=(i,), daemon=True) for i in range(total)]
    for t in joiners:
        t.start()
    for t in joiners:
        t.join(timeout=30)
    assert not errors, errors
    # "connect" is logged once the member is in the room.
    wait_until(lambda: count_lines(server, r"connect \S+ \(clients: \d+\)") == total,
               message="every join logged")

    notice = re.compile(r"^\* (\S+) joined \((\d+) online\)$")
    heard: dict = {m.name: set() for m in members}
    # member -> the count every notice of its join gave; the first member's
    # join is told to nobody, so it is the one never seen here
    counts: dict = {}

    def expected(member: ChatClient) -> set:
        mine = counts.get(member.name, 1)
        return {(name, n) for name, n in counts.items() if n > mine}

    def read_some() -> bool:
        for m in members:
            m.sock.settimeout(0.02)
            try:
                m.buffer += m.sock.recv(65536)
            except socket.timeout:
                pass
            while b"\n" in m.buffer:
                line, _, rest = bytes(m.buffer).partition(b"\n")
                m.buffer = bytearray(rest)
                match = notice.match(line.decode())
                assert match, f"{m.name} got {line!r}"
                name, n = match.group(1), int(match.group(2))
                assert counts.setdefault(name, n) == n, f"{name} announced as {n} and {counts[name]}"
                heard[m.name].add((name, n))
        return len(counts) == total - 1 and all(heard[m.name] >= expected(m) for m in members)

    wait_until(read_some, message="every member heard of every later join")
    assert sorted(counts.values()) == list(range(2, total + 1)), counts
    for m in members:
        assert heard[m.name] == expected(m), (m.name, counts.get(m.name, 1))
    for m in members:
        m.close()
    server.wait_for_line(r"\(clients: 0\)$", timeout=10)


def test_regression_churn_is_told_in_counts_and_drops_no_member(tcpkit_process):
    """A client that connected and closed in a loop sent every member a
    "joined" and a "left" line per connection, unpaced: 100,000 of each in
    4 s, and a member reading at a normal pace was dropped as a slow
    reader. Notices now share the room's budget (--chat-rate a second after
    a burst of as many); the rest are counted and told with the next notice
    that goes, so every join and leave is still accounted for."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--chat-rate", "20")
    listener = ChatClient(port)
    churn = 300
    for _ in range(churn):
        with socket.create_connection(("127.0.0.1", port)):
            pass
    wait_until(lambda: count_lines(server, r"disconnect ") >= churn, message="every churn logged")
    time.sleep(scaled(1.2))  # the budget grows back
    late = ChatClient(port)
    joined = left = told = 0
    while True:
        line = listener.line()
        told += 1
        if m := re.fullmatch(r"\* (\d+) joined and (\d+) left meanwhile", line):
            joined, left = joined + int(m.group(1)), left + int(m.group(2))
            told -= 1
        elif re.fullmatch(r"\* \S+ joined \(\d+ online\)", line):
            joined += 1
        elif re.fullmatch(r"\* \S+ left", line):
            left += 1
        else:
            raise AssertionError(f"unexpected line {line!r}")
        if line.startswith(f"* {late.name} joined"):
            break
    assert (joined, left) == (churn + 1, churn), (joined, left)
    assert told < 2 * churn, f"{told} notices: none was held back"
    listener.say("still here")
    assert late.line() == f"<{listener.name}> still here"
    listener.close()
    late.close()


def test_chat_across_io_threads_every_line_reaches_every_other_member(tcpkit_process):
    """With --threads 3 the members live on different I/O loops, and every
    broadcast crosses loops. Six members talk at once: each gets every other
    member's lines, each sender's in the order sent, and none of its own."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--threads", "3")
    members = [ChatClient(port)]
    server.wait_for_line(esc(f"connect {members[0].name} (clients: 1)"))
    # One at a time: the first member's notice shows that a join is done.
    # Notices from different loops may reach a member in either order, so
    # the later members compare theirs as a set.
    for n in range(2, 7):
        members.append(ChatClient(port))
        members[0].expect(f"* {members[-1].name} joined ({n} online)")
    for i, member in enumerate(members[1:], start=1):
        notices = {member.line() for _ in range(len(members) - 1 - i)}
        assert notices == {f"* {later.name} joined ({j + 1} online)"
                           for j, later in enumerate(members) if j > i}, member.name

    lines_each = 40
    start = threading.Barrier(len(members))
    errors = []

    def talk(member: ChatClient) -> None:
        try:
            start.wait(timeout=10)
            for k in range(lines_each):
                member.say(f"{k:03d} from {member.name}")
        except BaseException as e:
            errors.append(e)

    talkers = [threading.Thread(target=talk, args=(m,), daemon=True) for m in members]
    for t in talkers:
        t.start()
    for t in talkers:
        t.join(timeout=30)
    assert not errors, errors
    for member in members:
        got: dict[str, list[str]] = {}
        for _ in range(lines_each * (len(members) - 1)):
            match = re.fullmatch(r"<([^>]+)> (\d{3}) from (\S+)", member.line())
            assert match, f"{member.name}: unexpected line"
            assert match.group(1) == match.group(3)
            got.setdefault(match.group(1), []).append(match.group(2))
        assert member.name not in got, f"{member.name} got its own lines back"
        assert sorted(got) == sorted(m.name for m in members if m is not member)
        for sender, numbers in got.items():
            assert numbers == [f"{k:03d}" for k in range(lines_each)], f"{member.name} from {sender}"
        member.expect_silence()

    for n, member in enumerate(members):
        member.close()
        server.wait_for_line(rf"\(clients: {len(members) - n - 1}\)$")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0


# --- nicks are checked (design decision 10) ---------------------------------------------------

@pytest.mark.parametrize("nick, why", [
    (b"\xff\xfebad", "valid text"),
    (b"\x1b[31mred", "control characters"),
    (b"evil\rname", "control characters"),
    (b"\xc2\x85next", "control characters"),
    (b"abc\xe2\x80\xaecba", "control characters"),
    ("x".encode() * 33, "at most 32 characters"),
    (b"y" * (1024 * 1024), "at most 32 characters"),
    (b" ", "spaces or invisible characters"),
    (b"two words", "spaces or invisible characters"),
    ("\u3000".encode(), "spaces or invisible characters"),
    ("a\u200bb".encode(), "spaces or invisible characters"),
    ("\ufeff".encode(), "spaces or invisible characters"),
], ids=["invalid-utf8", "escape", "cr", "c1", "bidi", "33-chars", "1-mib", "a-space", "two-words",
        "ideographic-space", "zero-width-space", "bom"])
def test_a_bad_nick_is_refused_to_its_sender_alone(tcpkit_process, nick, why):
    """Regression: nicks were not checked, so invalid UTF-8 made
    /clients.json invalid JSON, and a megabyte of escapes and CRs went to
    every member raw."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--max-message", str(2 * 1024 * 1024),
                               "--metrics", "127.0.0.1:0")
    mport = int(wait_log(server, r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    a = ChatClient(port)
    b = ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    a.sock.sendall(b"/nick " + nick + b"\n")
    reply = a.line()
    assert reply.startswith("* nick refused: ") and why in reply, reply
    a.say("still here")
    b.expect(f"<{a.name}> still here")
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/clients.json", timeout=10) as response:
        names = [c["name"] for c in json.loads(response.read().decode("utf-8"))["clients"]]
    assert sorted(names) == sorted([a.name, b.name]), names
    a.say("/nick alice")
    b.expect(f"* {a.name} is now known as alice")
    a.close()
    b.close()


def test_regression_a_nick_another_member_goes_by_is_refused(tcpkit_process):
    # Two members could both be "bob", or one could take another's
    # address:port name: nothing stopped impersonation.
    server, port = start_serve(tcpkit_process, "--mode", "chat")
    a, b = ChatClient(port), ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    a.say("/nick bob")
    b.expect(f"* {a.name} is now known as bob")
    for taken in ("bob", "BOB"):
        b.say(f"/nick {taken}")
        assert b.line() == "* nick refused: another member has that name"
    c = ChatClient(port)
    b.expect(f"* {c.name} joined (3 online)")
    b.say(f"/nick {c.name}")
    assert b.line().startswith("* nick refused: a nick cannot look like an address")
    a.say("/nick bob")  # its own name again: no one else's
    b.expect(f"* bob is now known as bob")
    for client in (a, b, c):
        client.close()


def test_regression_a_line_reaches_other_members_without_control_characters(tcpkit_process):
    # A CR let a line rewrite itself on the others' terminals into a line
    # "from" another member; ESC sequences reached them raw.
    server, port = start_serve(tcpkit_process, "--mode", "chat")
    a, b = ChatClient(port), ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    a.sock.sendall(b"hi\r<bob> send me your password\x1b[K\x1b]0;x\x07 \xc2\x9b2J "
                   + "\u202e".encode() + b"\tok \\x1b\n")
    got = recv_line(b.sock, b.buffer)
    assert got == (f"<{a.name}> hi\\x0d<bob> send me your password\\x1b[K\\x1b]0;x\\x07 "
                   "\\u009b2J \\u202e\tok \\x1b").encode(), got
    a.close()
    b.close()


def test_a_gbk_nick_is_checked_after_conversion(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--encoding", "gbk")
    a = ChatClient(port)
    b = ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    a.sock.sendall(b"/nick " + "小明".encode("gbk") + b"\n")
    assert recv_line(b.sock, b.buffer).decode("gbk") == f"* {a.name} is now known as 小明"
    assert recv_line(a.sock, a.buffer).decode("gbk") == "* you are now known as 小明"
    a.sock.sendall(b"/nick \x81\x20x\n")  # a GBK lead byte without its trail byte
    assert recv_line(a.sock, a.buffer).decode("gbk").startswith("* nick refused: ")
    a.close()
    b.close()


@pytest.mark.parametrize("encoding", ["iso-2022-jp", "ISO-2022-JP-2", "iso-2022-jp-3", "iso-2022-cn",
                                      "iso-2022-cn-ext", "iso-2022-kr", "utf-7"])
def test_regression_an_encoding_with_shift_states_is_refused_by_chat(encoding):
    # ISO-2022-JP was accepted: its ESC bytes were escaped as control
    # characters, so every line with a kanji reached the others mangled;
    # and a line cannot start in the state the line before it ended in.
    result = run_tcpkit("serve", "--port", "0", "--mode", "chat", "--encoding", encoding)
    assert result.returncode == 2, result
    assert f"tcpkit serve: --encoding {encoding} " in result.stderr, result.stderr
    assert "chat needs an encoding that keeps ASCII as it is" in result.stderr, result.stderr


def test_chat_takes_multibyte_encodings_without_shift_states(tcpkit_process):
    for encoding in ("shift_jis", "euc-jp", "euc-kr", "gb18030", "big5"):
        server, port = start_serve(tcpkit_process, "--mode", "chat", "--encoding", encoding)
        a, b = ChatClient(port), ChatClient(port)
        a.expect(f"* {b.name} joined (2 online)")
        text = "日本" if encoding in ("shift_jis", "euc-jp") else "中" if encoding != "euc-kr" else "한"
        a.sock.sendall(text.encode(encoding) + b"\n")
        assert recv_line(b.sock, b.buffer).decode(encoding) == f"<{a.name}> {text}"
        a.close()
        b.close()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0


def test_regression_a_member_closed_for_a_long_line_is_told_why(tcpkit_process):
    # The member over --max-message was closed with no word: its client
    # saw the connection end and could not tell why.
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--max-message", "1024",
                               "--encoding", "gbk")
    a, b = ChatClient(port), ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    a.sock.sendall(b"x" * 2000 + b"\n")
    assert recv_line(a.sock, a.buffer).decode("gbk") == "* line over --max-message (1024 bytes); closing"
    server.wait_for_line(esc(f"disconnect {a.name}: message too large (clients: 1)"))
    b.expect(f"* {a.name} left")
    b.expect_silence()
    a.close()
    b.close()


def test_regression_a_nick_is_confirmed_to_the_member_who_asked(tcpkit_process):
    # Only the others heard of a rename, so a client waiting for a reply
    # to "/nick NAME" (connect --line --send without --wait) waited forever.
    server, port = start_serve(tcpkit_process, "--mode", "chat")
    result = run_tcpkit("connect", "127.0.0.1", port, "--line", "--send", "/nick alice", timeout=20)
    assert result.returncode == 0, result
    assert result.stdout == "* you are now known as alice\n", result


def test_regression_empty_lines_are_not_broadcast(tcpkit_process):
    # A bare newline reached every member as "<name> ": 10,000 of them
    # became 190 kB for each member.
    server, port = start_serve(tcpkit_process, "--mode", "chat")
    a, b = ChatClient(port), ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    a.sock.sendall(b"\n" * 1000 + b"\r\n" * 1000 + b"after the empty lines\n")
    b.expect(f"<{a.name}> after the empty lines")
    b.expect_silence()
    a.close()
    b.close()


@pytest.mark.parametrize("nick", ["127.0.0.1:{port}", "[::1]:5000", "unix:/tmp/chat.sock"])
def test_regression_a_nick_shaped_like_an_address_is_refused(tcpkit_process, nick):
    # "/nick 127.0.0.1:9599" was taken; a member who later connected from
    # that address joined under the same name, and two members showed as one.
    server, port = start_serve(tcpkit_process, "--mode", "chat")
    a, b = ChatClient(port), ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    nick = nick.format(port=int(b.name.rsplit(":", 1)[1]) + 1)
    a.say(f"/nick {nick}")
    assert a.line() == ("* nick refused: a nick cannot look like an address (HOST:PORT or "
                        "unix:PATH), which members without a nick go by")
    a.say("still unnamed")
    b.expect(f"<{a.name}> still unnamed")
    a.close()
    b.close()


@pytest.mark.parametrize("framing", ["length", "raw"])
def test_regression_chat_with_another_framing_is_a_usage_error(framing):
    # --framing length was taken and silently served as lines.
    result = run_tcpkit("serve", "--port", "0", "--mode", "chat", "--framing", framing)
    assert result.returncode == 2, result
    assert (f"tcpkit serve: --mode chat is line-based: --framing {framing} does not apply"
            in result.stderr), result.stderr


def test_chat_takes_framing_line_given_or_not(tcpkit_process):
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--framing", "line")
    assert "(mode chat, framing line," in server.stdout_lines[0], server.stdout_lines[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_regression_members_hear_that_the_server_is_shutting_down(tcpkit_process, signum):
    # On SIGINT/SIGTERM every member got a bare FIN: its client could not
    # tell a server going away from a network fault.
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--threads", "2",
                               "--encoding", "gbk")
    a = ChatClient(port)
    server.wait_for_line(esc(f"connect {a.name} (clients: 1)"))
    b = ChatClient(port)
    a.expect(f"* {b.name} joined (2 online)")
    b.say("/nick bob")
    b.expect("* you are now known as bob")
    a.expect(f"* {b.name} is now known as bob")
    server.signal(signum)
    # Both read to the end before either closes: a member that left first
    # might be announced to the other before its own goodbye.
    for member in (a, b):
        rest, how = recv_until_eof(member.sock)
        assert (bytes(member.buffer) + rest).decode("gbk") == "* server shutting down\n"
        assert how is None
    a.close()
    b.close()
    assert server.wait(timeout=10) == 0


# --- flood control (--chat-rate) -------------------------------------------------------------

def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """sendall() on a thread: a paced member's kernel buffers fill up, and
    its sendall() waits for the room (bounded by a generous timeout)."""
    sock.settimeout(scaled(60))
    sender = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    sender.start()
    return sender


def test_a_flooder_is_paced_and_a_slow_listener_keeps_up_and_hears_others(tcpkit_process):
    """One member sends 1000 lines in one sendall(). The room takes 200 a
    second after a burst of 200, so a listener that reads slowly (a 4 KiB
    receive buffer, read once per 20 ms) keeps up: it is never
    dropped as a slow reader and gets every line, in order. Another member's
    line, said once the listener has 400 of the flood's lines, reaches it
    before the flood's last line: it does not wait behind the whole flood.
    Without flood control the server takes the 1000 lines at once, and the
    line said later comes after all of them (or the listener is dropped)."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--chat-rate", "200",
                               "--high-water-mark", "65536")
    flooder = ChatClient(port)
    listener = ChatClient(port, rcvbuf=4096)
    flooder.expect(f"* {listener.name} joined (2 online)")
    talker = ChatClient(port)
    flooder.expect(f"* {talker.name} joined (3 online)")
    listener.expect(f"* {talker.name} joined (3 online)")

    total = 1000
    filler = "x" * 80
    sender = send_in_background(
        flooder.sock, "".join(f"{k:04d} {filler}\n" for k in range(total)).encode())
    flood_prefix = f"<{flooder.name}> "
    said = f"<{talker.name}> said during the flood"
    numbers = []        # the flood's lines, as the listener got them
    heard_after = None  # how many flood lines had come when the talker's did
    deadline = time.monotonic() + scaled(60)
    while len(numbers) < total:
        assert time.monotonic() < deadline, f"the listener got {len(numbers)} of {total} lines"
        line = listener.line(timeout=20)
        if line == said:
            heard_after = len(numbers)
            continue
        assert line.startswith(flood_prefix), line
        numbers.append(int(line[len(flood_prefix):].split(" ", 1)[0]))
        if len(numbers) == 400:
            talker.say("said during the flood")
        if b"\n" not in listener.buffer:
            time.sleep(0.02)  # the listener's pace: one read per 20 ms at most
    assert numbers == list(range(total)), "lines lost or out of order"
    assert heard_after is not None, "the talker's line came only after the whole flood"
    sender.join(timeout=scaled(10))
    assert not find_line(server, r"slow reader"), "a member was dropped as a slow reader"
    for member in (flooder, listener, talker):
        member.close()
    server.wait_for_line(r"\(clients: 0\)$")


def test_a_paced_member_that_closes_has_its_waiting_lines_said_before_it_leaves(tcpkit_process):
    """A member over its rate that closes its socket right behind its lines
    (its FIN follows them): none of them is dropped. They go to the room at
    the rate, in order, and then the others hear that it left."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--chat-rate", "100")
    flooder = ChatClient(port)
    listener = ChatClient(port)
    flooder.expect(f"* {listener.name} joined (2 online)")
    flooder_name = flooder.name
    total = 300
    flooder.sock.sendall("".join(f"{k:03d} and goodbye\n" for k in range(total)).encode())
    flooder.close()  # all it was sent is read: a FIN, not a reset
    for k in range(total):
        listener.expect(f"<{flooder_name}> {k:03d} and goodbye")
    listener.expect(f"* {flooder_name} left")
    server.wait_for_line(esc(f"disconnect {flooder_name}: peer closed (clients: 1)"))
    listener.close()


@pytest.mark.parametrize("backend", ["epoll", "uring"])
def test_regression_a_paced_member_is_not_closed_as_idle(tcpkit_process, backend):
    """--idle-timeout counted only what the server read, and pacing stops the
    reads: a member whose lines waited longer than the timeout was closed as
    idle, and the lines it had sent were lost. 15 lines at 5 a second take
    about 2 s to go out, twice the idle timeout."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--chat-rate", "5",
                               "--idle-timeout", "1", "--io-backend", backend)
    flooder = ChatClient(port)
    listener = ChatClient(port)
    flooder.expect(f"* {listener.name} joined (2 online)")
    total = 15
    flooder.sock.sendall("".join(f"{k:02d} waits its turn\n" for k in range(total)).encode())
    for k in range(total):
        listener.expect(f"<{flooder.name}> {k:02d} waits its turn")
        listener.sock.sendall(b"\n")  # an empty line, which nobody hears, keeps it from idling
    assert not find_line(server, esc(f"disconnect {flooder.name}: idle timeout"))
    flooder.close()
    listener.close()


@pytest.mark.parametrize("backend", ["epoll", "uring"])
def test_regression_a_member_who_only_listens_is_not_idle(tcpkit_process, backend):
    """On epoll, a line the kernel took at once was not activity for
    --idle-timeout (on io_uring it was): a member who only listened was
    closed as idle while the room talked to it. Lines 0.15 s apart for three
    times the timeout reach it; once the room is silent, it idles out."""
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--idle-timeout", "0.5",
                               "--io-backend", backend)
    speaker = ChatClient(port)
    listener = ChatClient(port)
    speaker.expect(f"* {listener.name} joined (2 online)")
    for k in range(10):
        speaker.say(f"line {k}")
        listener.expect(f"<{speaker.name}> line {k}")
        time.sleep(0.15)
    assert not find_line(server, esc(f"disconnect {listener.name}: idle timeout"))
    # Once the room is silent, the listener idles out.
    recv_until_eof(listener.sock, timeout=5)
    wait_log(server, esc(f"disconnect {listener.name}: idle timeout"))
    speaker.close()
    listener.close()


@pytest.mark.parametrize("value, why", [
    ("-1", "'-1' is not a whole number"),
    ("abc", "'abc' is not a whole number"),
    ("2.5", "'2.5' is not a whole number"),
    ("", "'' is not a whole number"),
    ("1000001", "1000001 is too large"),
], ids=["negative", "text", "fraction", "empty", "too-large"])
def test_a_malformed_chat_rate_is_a_usage_error(value, why):
    result = run_tcpkit("serve", "--port", "0", "--mode", "chat", "--chat-rate", value)
    assert result.returncode == 2, result
    assert f"--chat-rate: {why} (give 0 to 1000000)" in result.stderr, result.stderr


def test_chat_rate_outside_chat_is_a_usage_error():
    result = run_tcpkit("serve", "--port", "0", "--mode", "echo", "--chat-rate", "5")
    assert result.returncode == 2, result
    assert "tcpkit serve: --chat-rate paces the lines of chat members; it needs --mode chat" in (
        result.stderr), result.stderr

"""Black-box tests of `tcpkit serve --mode chat --cluster redis://HOST:PORT`:
chat rooms of several instances joined through a real Redis server's
pub/sub. Each test starts its own `redis-server` on a loopback port with
persistence off, and kills and restarts it to show that local chat never
depends on Redis and that the instances find each other again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import pick_free_port, wait_for_port, wait_until
from serve_util import ChatClient, count_lines, find_line, start_serve, wait_log

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


class RedisServer:
    """A real redis-server on 127.0.0.1:`port`, no snapshots, no AOF."""

    def __init__(self, port: int, workdir: Path, *extra: str):
        self.port = port
        self.workdir = workdir
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (scripts/install-deps installs it)")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir), *self.extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    servers: list[RedisServer] = []

    def start(port: int | None = None, *extra: str) -> RedisServer:
        server = RedisServer(port or pick_free_port(), tmp_path, *extra).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def start_instance(tcpkit_process, redis_port: int, *args, url: str | None = None, env: dict | None = None):
    return start_serve(tcpkit_process, "--mode", "chat", "--cluster", url or f"redis://127.0.0.1:{redis_port}",
                       *args, env=env)


def wait_joined(server, redis_port: int, times: int = 1) -> None:
    """Both Redis links are up: publisher connected, subscription confirmed."""
    subscribed = rf"cluster: subscribed to tcpkit:chat on redis 127\.0\.0\.1:{redis_port}$"
    publisher = rf"cluster: connected to redis 127\.0\.0\.1:{redis_port} \(publisher\)$"
    wait_until(lambda: count_lines(server, subscribed) >= times and count_lines(server, publisher) >= times,
               timeout=15, message=f"instance to join redis :{redis_port} ({times}x)\n{server.describe()}")


def test_lines_cross_instances_once(tcpkit_process, redis_server):
    redis = redis_server()
    a, port_a = start_instance(tcpkit_process, redis.port)
    b, port_b = start_instance(tcpkit_process, redis.port)
    wait_joined(a, redis.port)
    wait_joined(b, redis.port)

    alice = ChatClient(port_a)
    wait_log(a, rf"connect {re.escape(alice.name)} ")
    carol = ChatClient(port_a)
    alice.expect(f"* {carol.name} joined (2 online)")
    bob = ChatClient(port_b)
    wait_log(b, rf"connect {re.escape(bob.name)} ")

    alice.say("hello from A")
    carol.expect(f"<{alice.name}> hello from A")
    bob.expect(f"<{alice.name}> hello from A")
    bob.say("hi from B")
    # Redis delivers in publish order, so had A taken its own line back from
    # the subscription, alice and carol would see "hello from A" again first.
    alice.expect(f"<{bob.name}> hi from B")
    carol.expect(f"<{bob.name}> hi from B")

    # Names travel with the line.
    bob.say("/nick bob")
    bob.say("named now")
    alice.expect("<bob> named now")
    for client in (alice, carol, bob):
        client.close()


def test_redis_outage_keeps_local_chat_and_recovers(tcpkit_process, redis_server):
    redis = redis_server()
    a, port_a = start_instance(tcpkit_process, redis.port)
    b, port_b = start_instance(tcpkit_process, redis.port)
    wait_joined(a, redis.port)
    wait_joined(b, redis.port)
    alice = ChatClient(port_a)
    wait_log(a, rf"connect {re.escape(alice.name)} ")
    carol = ChatClient(port_a)
    alice.expect(f"* {carol.name} joined (2 online)")
    bob = ChatClient(port_b)
    wait_log(b, rf"connect {re.escape(bob.name)} ")
    alice.say("before")
    carol.expect(f"<{alice.name}> before")
    bob.expect(f"<{alice.name}> before")

    redis.kill()
    wait_log(a, rf"cluster: lost redis 127\.0\.0\.1:{redis.port}: ")
    wait_log(b, rf"cluster: lost redis 127\.0\.0\.1:{redis.port}: ")
    alice.say("redis is down")
    carol.expect(f"<{alice.name}> redis is down")
    assert a.returncode is None and b.returncode is None

    redis_server(redis.port)
    wait_joined(a, redis.port, times=2)
    wait_joined(b, redis.port, times=2)
    # Both links are back; a line published now reaches B. Lines are not
    # queued while Redis is away, so the first one bob sees is a new one.
    deadline = time.monotonic() + 15
    attempt = 0
    while True:
        attempt += 1
        alice.say(f"back {attempt}")
        carol.expect(f"<{alice.name}> back {attempt}")
        try:
            got = bob.line(timeout=0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "no line crossed to B after redis came back"
    assert re.fullmatch(rf"<{re.escape(alice.name)}> back \d+", got), got
    bob.say("B is back")
    alice.expect(f"<{bob.name}> B is back")
    carol.expect(f"<{bob.name}> B is back")
    for client in (alice, carol, bob):
        client.close()


def test_starts_without_redis_and_joins_later(tcpkit_process, redis_server):
    redis_port = pick_free_port()
    a, port_a = start_instance(tcpkit_process, redis_port)
    wait_log(a, rf"cluster: cannot reach redis 127\.0\.0\.1:{redis_port}: Connection refused")
    alice = ChatClient(port_a)
    wait_log(a, rf"connect {re.escape(alice.name)} ")
    carol = ChatClient(port_a)
    alice.expect(f"* {carol.name} joined (2 online)")
    carol.say("local works")
    alice.expect(f"<{carol.name}> local works")

    redis_server(redis_port)
    b, port_b = start_instance(tcpkit_process, redis_port)
    wait_joined(a, redis_port)
    wait_joined(b, redis_port)
    bob = ChatClient(port_b)
    wait_log(b, rf"connect {re.escape(bob.name)} ")
    bob.say("found you")
    alice.expect(f"<{bob.name}> found you")
    carol.expect(f"<{bob.name}> found you")
    for client in (alice, carol, bob):
        client.close()


@pytest.mark.parametrize("args, message", [
    (["--mode", "ack", "--cluster", "redis://127.0.0.1:6379"], "needs --mode chat"),
    (["--mode", "chat", "--cluster", "http://127.0.0.1:6379"], "expected redis://HOST:PORT"),
    (["--mode", "chat", "--cluster", "redis://:s3cret%zz@127.0.0.1:6379"], "bad %-escape"),
    (["--mode", "chat", "--cluster", "http://user:s3cret@127.0.0.1:6379"], "http://user:***@127.0.0.1:6379"),
    (["--mode", "chat", "--cluster", "redis://127.0.0.1:6379", "--cluster-auth-file", "/nonexistent/pw"],
     "--cluster-auth-file"),
])
def test_bad_cluster_flags_are_usage_errors(tcpkit, args, message):
    result = tcpkit("serve", "--port", "0", *args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "s3cret" not in result.stderr


# --- Redis is a trust boundary (design decision 10) -------------------------------------------

def redis_command(port: int, *args: bytes, password: bytes | None = None) -> bytes:
    """Sends one command (after AUTH, when given) with a raw socket; returns
    the first bytes of the last reply."""
    def encode(parts) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        wire = (encode([b"AUTH", password]) if password else b"") + encode(list(args))
        sock.sendall(wire)
        replies = b""
        want = 2 if password else 1
        while replies.count(b"\r\n") < want:
            chunk = sock.recv(65536)
            assert chunk, replies
            replies += chunk
        return replies


PASSWORD = "s3cret-pw"


def test_auth_from_the_url_a_file_or_the_environment(tcpkit_process, redis_server, tmp_path):
    """Regression: a Redis with a password could not be used at all, so the
    link had to be open to anyone who could reach Redis."""
    redis = redis_server(None, "--requirepass", PASSWORD)
    auth_file = tmp_path / "redis-password"
    auth_file.write_text(PASSWORD + "\n")
    a, port_a = start_instance(tcpkit_process, redis.port, url=f"redis://:{PASSWORD}@127.0.0.1:{redis.port}")
    b, port_b = start_instance(tcpkit_process, redis.port, "--cluster-auth-file", str(auth_file))
    c, port_c = start_instance(tcpkit_process, redis.port,
                               env={**os.environ, "TCPKIT_REDIS_PASSWORD": PASSWORD})
    for server in (a, b, c):
        wait_joined(server, redis.port)
    alice, bob, carol = ChatClient(port_a), ChatClient(port_b), ChatClient(port_c)
    for server, client in ((a, alice), (b, bob), (c, carol)):
        wait_log(server, rf"connect {re.escape(client.name)} ")
    alice.say("through auth")
    bob.expect(f"<{alice.name}> through auth")
    carol.expect(f"<{alice.name}> through auth")
    for server in (a, b, c):
        assert not any(PASSWORD in line for line in server.stdout_lines + server.stderr_lines)
    for client in (alice, bob, carol):
        client.close()


def test_auth_as_an_acl_user(tcpkit_process, redis_server):
    redis = redis_server()
    assert redis_command(redis.port, b"ACL", b"SETUSER", b"chat", b"on", b">" + PASSWORD.encode(), b"~*",
                         b"&*", b"+@all").startswith(b"+OK")
    assert redis_command(redis.port, b"ACL", b"SETUSER", b"default", b"off").startswith(b"+OK")
    a, port_a = start_instance(tcpkit_process, redis.port, url=f"redis://chat:{PASSWORD}@127.0.0.1:{redis.port}")
    wait_joined(a, redis.port)
    assert not any(PASSWORD in line for line in a.stdout_lines)


def test_a_wrong_password_is_logged_without_the_password(tcpkit_process, redis_server):
    redis = redis_server(None, "--requirepass", PASSWORD)
    a, port_a = start_instance(tcpkit_process, redis.port, url=f"redis://:not-{PASSWORD}@127.0.0.1:{redis.port}")
    wait_log(a, rf"cluster: redis 127\.0\.0\.1:{redis.port} answered: WRONGPASS")
    assert not any(PASSWORD in line for line in a.stdout_lines)


def test_a_relayed_line_with_a_line_break_inside_is_dropped(tcpkit_process, redis_server):
    """Regression: a payload holding newlines became several chat lines, so
    whoever could PUBLISH showed members lines nobody typed."""
    redis = redis_server()
    a, port_a = start_instance(tcpkit_process, redis.port)
    wait_joined(a, redis.port)
    alice = ChatClient(port_a)
    wait_log(a, rf"connect {re.escape(alice.name)} ")
    redis_command(redis.port, b"PUBLISH", b"tcpkit:chat", b"other\n<mallory> hi\n<admin> forged\n")
    redis_command(redis.port, b"PUBLISH", b"tcpkit:chat", b"other\n<mallory> over\rwritten\n")
    redis_command(redis.port, b"PUBLISH", b"tcpkit:chat", b"other\n<bob> a real line\n")
    alice.expect("<bob> a real line")
    # The log is read by another thread than alice's socket: wait for it.
    dropped = r"cluster: dropped a relayed line from redis .* with a line break inside"
    wait_until(lambda: count_lines(a, dropped) >= 2)
    assert count_lines(a, dropped) == 2
    alice.close()


def test_an_oversized_publish_is_dropped_and_nobody_is_disconnected(tcpkit_process, redis_server):
    """Regression: one PUBLISH of 24 MiB went to every member and overflowed
    their output buffers, so all of them were dropped as slow readers. Now a
    payload over --max-message is dropped with a log line, and one too big to
    read at all costs the Redis link (which reconnects), never the members."""
    redis = redis_server()
    a, port_a = start_instance(tcpkit_process, redis.port, "--max-message", "4096")
    wait_joined(a, redis.port)
    alice = ChatClient(port_a)
    wait_log(a, rf"connect {re.escape(alice.name)} ")
    bob = ChatClient(port_a)
    alice.expect(f"* {bob.name} joined (2 online)")
    redis_command(redis.port, b"PUBLISH", b"tcpkit:chat", b"other\n<bob> " + b"y" * 5000 + b"\n")
    wait_log(a, r"cluster: dropped a relayed line of 5\d{3} bytes from redis .* \(over --max-message\)")
    redis_command(redis.port, b"PUBLISH", b"tcpkit:chat", b"other\n<big> " + b"x" * (24 * 1024 * 1024) + b"\n")
    wait_log(a, r"cluster: redis .* sent a malformed reply: a string over \d+ bytes")
    # The subscriber reconnected (the publisher never left).
    wait_until(lambda: count_lines(a, r"cluster: subscribed to tcpkit:chat on redis ") >= 2, timeout=15)
    redis_command(redis.port, b"PUBLISH", b"tcpkit:chat", b"other\n<carol> still here\n")
    alice.expect("<carol> still here")
    bob.expect("<carol> still here")
    assert find_line(a, r"slow reader") is None
    alice.close()
    bob.close()

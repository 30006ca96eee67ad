"""Black-box tests of `tcpkit serve --mode chat --cluster redis://HOST:PORT`:
chat rooms of several instances joined through a real Redis server's
pub/sub. Each test starts its own `redis-server` on a loopback port with
persistence off, and kills and restarts it to show that local chat never
depends on Redis and that the instances find each other again.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import pick_free_port, wait_for_port, wait_until
from serve_util import ChatClient, count_lines, start_serve, wait_log

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


class RedisServer:
    """A real redis-server on 127.0.0.1:`port`, no snapshots, no AOF."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (scripts/install-deps installs it)")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
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

    def start(port: int | None = None) -> RedisServer:
        server = RedisServer(port or pick_free_port(), tmp_path).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def start_instance(tcpkit_process, redis_port: int):
    server, port = start_serve(tcpkit_process, "--mode", "chat", "--cluster", f"redis://127.0.0.1:{redis_port}")
    return server, port


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
    (["--mode", "chat", "--cluster", "redis://:secret@127.0.0.1:6379"], "passwords are not supported"),
])
def test_bad_cluster_flags_are_usage_errors(tcpkit, args, message):
    result = tcpkit("serve", "--port", "0", *args)
    assert result.returncode == 2, result
    assert message in result.stderr

"""`tcpkit serve --mode echo --splice auto|always|never`: whether a bulk
client's bytes go back through a pipe inside the kernel (splice) or are
copied through the process.

auto splices only for a client on another host: one on this host would get
its bytes back in the pages its own sends filled, which its kernel cannot
reuse, so each of its sends would take fresh pages. "Another host" is a
network namespace of the test's own, joined to the server's by a veth pair;
"this host" is a client in the server's namespace that connects to the
server's address. Whether the echo splices shows in the server's
descriptors: it holds a pipe (two ends) while a bulk client is echoed
inside the kernel, and none otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid

import pytest

from conftest import TcpkitProcess, run_tcpkit, tcpkit_path
from serve_util import LISTENING_RE

SERVER_ADDRESS = "10.201.0.1"
CLIENT_ADDRESS = "10.201.0.2"
PORT = 7001


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def namespaces_unavailable() -> str:
    """Why this machine cannot make network namespaces ("" when it can)."""
    if shutil.which("ip") is None:
        return "no `ip` (iproute2: scripts/install-deps installs it)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"tkprobe{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


@pytest.fixture(scope="module")
def namespaces():
    """Two network namespaces, the server's and another host's, joined by a
    veth pair: SERVER_ADDRESS in the first, CLIENT_ADDRESS in the second."""
    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:6]
    server_ns, client_ns = f"tks{tag}", f"tkc{tag}"
    ip("netns", "add", server_ns)
    try:
        ip("netns", "add", client_ns)
        ip("link", "add", f"vs{tag}", "netns", server_ns, "type", "veth", "peer", "name", f"vc{tag}",
           "netns", client_ns)
        for ns, dev, address in ((server_ns, f"vs{tag}", SERVER_ADDRESS),
                                 (client_ns, f"vc{tag}", CLIENT_ADDRESS)):
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield server_ns, client_ns
    finally:
        subprocess.run(["ip", "netns", "del", client_ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", server_ns], capture_output=True)


def pipe_ends(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                n += 1
        except OSError:
            pass  # closed meanwhile
    return n


def most_pipe_ends_during(pid: int, work) -> int:
    """The most pipe ends `pid` held while work() ran, sampled without pause."""
    most = pipe_ends(pid)
    done = threading.Event()

    def sample():
        nonlocal most
        while not done.is_set():
            most = max(most, pipe_ends(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join(timeout=5)
    return most


@pytest.mark.parametrize("splice, client_elsewhere, spliced", [
    ("auto", True, True),
    ("auto", False, False),
    ("never", True, False),
    ("always", False, True),
])
def test_the_echo_splices_where_splice_says(tcpkit_process, namespaces, splice, client_elsewhere,
                                             spliced):
    server_ns, client_ns = namespaces
    server = tcpkit_process(argv=["ip", "netns", "exec", server_ns, str(tcpkit_path()), "serve",
                                  "--mode", "echo", "--splice", splice, "--host", SERVER_ADDRESS,
                                  "--port", str(PORT), "-q"])
    server.wait_for_line(LISTENING_RE)
    before = pipe_ends(server.pid)  # its standard streams are pipes too
    report = {}

    def bulk():
        # tcpkit bench checks every byte it gets back.
        out = subprocess.run(["ip", "netns", "exec", client_ns if client_elsewhere else server_ns,
                              str(tcpkit_path()), "bench", SERVER_ADDRESS, str(PORT), "--conns", "4",
                              "--size", "262144", "--duration", "1", "--format", "json"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        report.update(json.loads(out.stdout))

    most = most_pipe_ends_during(server.pid, bulk)
    assert report["messages"] > 0 and not any(report["errors"].values()), report
    if spliced:
        assert most >= before + 2, f"--splice {splice}: the echo never held a pipe"
    else:
        assert most == before, f"--splice {splice}: the echo made a pipe ({most - before} ends)"


def test_splice_needs_echo_mode(tcpkit_bin):
    result = run_tcpkit("serve", "--port", "0", "--mode", "ack", "--splice", "never")
    assert result.returncode == 2, result
    assert "--splice is about echoing; it needs --mode echo" in result.stderr


def test_splice_takes_only_its_three_words(tcpkit_bin):
    result = run_tcpkit("serve", "--port", "0", "--mode", "echo", "--splice", "sometimes")
    assert result.returncode == 2, result
    assert "--splice" in result.stderr and "sometimes" in result.stderr, result.stderr

"""Black-box tests of `tcpkit port PORT`: service names, listeners with their
owning process, and connection states, checked against real sockets made
with Python's socket module (like the tutorial's server)."""

import json
import os
import random
import re
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ipv6_loopback_available, pick_free_port, run_tcpkit, tcpkit_path, wait_until

pytestmark = pytest.mark.usefixtures("tcpkit_bin")


def own_process_name() -> str:
    return Path("/proc/self/comm").read_text().strip()


def port_json(port: int) -> dict:
    result = run_tcpkit("port", port, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def port_text(port: int) -> str:
    result = run_tcpkit("port", port)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_states(port: int, expected: dict) -> dict:
    """Waits until the port's state counts include `expected` (the kernel
    finishes a close a moment after the system call returns)."""
    def matches():
        states = port_json(port)["states"]
        return states if all(states.get(k, 0) == v for k, v in expected.items()) else None
    return wait_until(matches, timeout=10, message=f"states {expected} on port {port}")


@pytest.fixture
def listener():
    """A listening socket on a loopback port, as in the tutorial:
    socket -> bind -> listen. The port lies below the kernel's ephemeral range
    (ip_local_port_range), so that no other test's client connection, made
    while this one counts connections on the port, can have it as its own end."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        try:
            server.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    else:
        server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server, server.getsockname()[1]
    server.close()


def test_json_names_the_listening_process(listener):
    _, port = listener
    facts = port_json(port)
    assert facts["port"] == port
    assert facts["listening"] is True
    assert facts["listeners"] == [{
        "address": f"127.0.0.1:{port}",
        "inode": facts["listeners"][0]["inode"],
        "pid": os.getpid(),
        "process": own_process_name(),
        "dual_stack": False,
    }]
    assert facts["listeners"][0]["inode"] > 0


def test_text_names_the_listening_process(listener):
    _, port = listener
    text = port_text(port)
    assert "LISTEN" in text
    assert f"127.0.0.1:{port}" in text
    assert f"pid {os.getpid()} ({own_process_name()})" in text
    assert "nobody is listening" not in text


@pytest.mark.skipif(not ipv6_loopback_available(), reason="IPv6 loopback is not available")
def test_ipv6_listener_is_bracketed():
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
        server.bind(("::1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        addresses = [entry["address"] for entry in port_json(port)["listeners"]]
        assert addresses == [f"[::1]:{port}"]


# Regression: an IPv6 socket on [::] was shown the same whether it took
# IPv4 clients too (IPV6_V6ONLY off: ss writes "*:PORT") or IPv6 ones only.
@pytest.mark.skipif(not ipv6_loopback_available(), reason="IPv6 loopback is not available")
def test_regression_a_dual_stack_listener_is_told_from_an_ipv6_only_one():
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as dual, \
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as v6only:
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        v6only.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for server in (dual, v6only):
            server.bind(("::", 0))
            server.listen(1)
        dual_port, v6only_port = dual.getsockname()[1], v6only.getsockname()[1]
        assert [(l["address"], l["dual_stack"]) for l in port_json(dual_port)["listeners"]] == [
            (f"[::]:{dual_port}", True)]
        assert [(l["address"], l["dual_stack"]) for l in port_json(v6only_port)["listeners"]] == [
            (f"[::]:{v6only_port}", False)]
        assert "IPv4 too (dual-stack: IPV6_V6ONLY off)" in port_text(dual_port)
        assert "IPv6 only (IPV6_V6ONLY)" in port_text(v6only_port)
        assert "dual-stack" not in port_text(v6only_port)


def test_established_connection_counts_both_ends(listener):
    server, port = listener
    with socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = server.accept()
        with accepted:
            wait_for_states(port, {"ESTABLISHED": 2})
            assert "ESTABLISHED  2" in port_text(port)


def test_server_closing_first_leaves_close_wait_then_time_wait(listener):
    server, port = listener
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: the tutorial's restart scenario

    # The client has seen the FIN (recv() returns 0 bytes) but not closed yet.
    client.settimeout(10)
    assert client.recv(1) == b""
    wait_for_states(port, {"CLOSE_WAIT": 1, "FIN_WAIT2": 1})
    assert "the local program has not called close()" in port_text(port)

    client.close()
    states = wait_for_states(port, {"TIME_WAIT": 1, "CLOSE_WAIT": 0, "ESTABLISHED": 0})
    assert "TIME_WAIT" in states
    text = port_text(port)
    assert "TIME_WAIT    1" in text
    assert "SO_REUSEADDR" in text
    assert "Address already in use" in text


@pytest.mark.parametrize("port, service", [(22, "ssh"), (80, "http"), (443, "https")])
def test_well_known_service_names(port, service):
    text = port_text(port)
    assert f"service:   {service}" in text
    assert "well-known" in text
    assert port_json(port)["service"] == service


def test_port_ranges():
    assert port_json(80)["range"] == "well-known"
    assert port_json(8080)["range"] == "registered"
    assert port_json(50000)["range"] == "dynamic"


def port_in_a_namespace(unprivileged_start: int, *args) -> subprocess.CompletedProcess:
    """`tcpkit port ARGS` in a network namespace of its own (a user namespace
    makes it possible without root) whose ip_unprivileged_port_start is set."""
    return subprocess.run(
        ["unshare", "-Urn", "sh", "-c",
         'echo "$1" > /proc/sys/net/ipv4/ip_unprivileged_port_start && shift && exec "$@"',
         "sh", str(unprivileged_start), str(tcpkit_path()), "port", *map(str, args)],
        capture_output=True, text=True, timeout=30)


def namespaces_work() -> bool:
    try:
        return port_in_a_namespace(80, "80").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# Regression: every port below 1024 was said to need root, and every other
# port not, though the kernel's line is ip_unprivileged_port_start, which
# containers often set to 0 (Docker does) and which may be raised too.
@pytest.mark.skipif(not namespaces_work(), reason="unshare -Urn is not permitted here")
def test_regression_who_may_bind_a_port_follows_ip_unprivileged_port_start():
    for port, start, needs_privilege, sentence in [
            (80, 80, False, "on this machine any user may bind it (ip_unprivileged_port_start is 80)."),
            (22, 80, True, "binding one needs root or CAP_NET_BIND_SERVICE (ip_unprivileged_port_start is 80)."),
            (8080, 9000, True,
             "on this machine binding it needs root or CAP_NET_BIND_SERVICE (ip_unprivileged_port_start is 9000)."),
            (8080, 1024, False, "any user may bind one."),
            (443, 1024, True, "binding one needs root or CAP_NET_BIND_SERVICE.")]:
        text = port_in_a_namespace(start, port)
        assert text.returncode == 0, text.stderr
        assert sentence in text.stdout, (port, start, text.stdout)
        facts = json.loads(port_in_a_namespace(start, port, "--json").stdout)
        assert facts["bind_needs_privilege"] is needs_privilege, (port, start, facts)
    assert port_json(0)["bind_needs_privilege"] is False


# Regression: a port of the ephemeral range that ip_local_reserved_ports
# holds was called ephemeral, though the kernel never gives it to a client.
@pytest.mark.skipif(not namespaces_work(), reason="unshare -Urn is not permitted here")
def test_regression_a_reserved_port_is_not_ephemeral():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    reserved = f"{low + 1},{low + 10}-{low + 12}"
    def facts(port):
        result = subprocess.run(
            ["unshare", "-Urn", "sh", "-c",
             'echo "$1" > /proc/sys/net/ipv4/ip_local_reserved_ports && shift && exec "$@"',
             "sh", reserved, str(tcpkit_path()), "port", str(port), "--json"],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    for port, is_reserved in [(low, False), (low + 1, True), (low + 2, False), (low + 10, True),
                              (low + 12, True), (low + 13, False)]:
        got = facts(port)
        assert got["ephemeral"] is (not is_reserved), (port, got)
        assert got["reserved"] is is_reserved, (port, got)
    text = subprocess.run(
        ["unshare", "-Urn", "sh", "-c",
         'echo "$1" > /proc/sys/net/ipv4/ip_local_reserved_ports && shift && exec "$@"',
         "sh", reserved, str(tcpkit_path()), "port", str(low + 11)],
        capture_output=True, text=True, timeout=30).stdout
    assert "but reserved (ip_local_reserved_ports), so the kernel never picks it" in text, text


LINK_LOCAL_LISTENER = """
import json, socket, subprocess, sys
server = socket.socket(socket.AF_INET6)
server.bind(("fe80::1", 0, 0, socket.if_nametoindex("lo")))
server.listen(1)
port = server.getsockname()[1]
text = subprocess.run([sys.argv[1], "port", str(port)], capture_output=True, text=True).stdout
facts = json.loads(subprocess.run([sys.argv[1], "port", "--json", str(port)],
                                  capture_output=True, text=True).stdout)
print(json.dumps({"port": port, "text": text, "facts": facts}))
"""


def run_link_local_listener():
    """A listener on fe80::1%lo, in a network namespace of its own (a user
    namespace makes that possible without root), and what port says of it."""
    import sys
    try:
        result = subprocess.run(
            ["unshare", "-Urn", "sh", "-c",
             "ip link set lo up && ip -6 addr add fe80::1/64 dev lo nodad && exec \"$@\"",
             "sh", sys.executable, "-c", LINK_LOCAL_LISTENER, str(tcpkit_path())],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return json.loads(result.stdout) if result.returncode == 0 else None


# Regression: a listener on a link-local address lost its zone ("[fe80::1]"
# for fe80::1%lo, which ss writes "[fe80::1]%lo"): /proc/net/tcp6 does not
# hold the interface; sock_diag does.
@pytest.mark.skipif(not namespaces_work() or run_link_local_listener() is None,
                    reason="cannot make a link-local listener in a namespace here")
def test_regression_a_link_local_listener_keeps_its_zone():
    got = run_link_local_listener()
    port = got["port"]
    assert [l["address"] for l in got["facts"]["listeners"]] == [f"[fe80::1%lo]:{port}"], got
    assert f"[fe80::1%lo]:{port}" in got["text"], got["text"]


def test_ephemeral_range_follows_the_kernel():
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert port_json(low)["ephemeral"] is True
    assert port_json(high)["ephemeral"] is True
    assert port_json(low - 1)["ephemeral"] is False
    assert port_json(low)["ephemeral_range"] == [low, high]
    assert "ip_local_port_range" in port_text(low)


def test_nobody_listening_exits_zero():
    port = pick_free_port()
    result = run_tcpkit("port", port)
    assert result.returncode == 0, result.stderr
    assert f"nobody is listening on port {port}" in result.stdout
    facts = port_json(port)
    assert facts["listening"] is False
    assert facts["listeners"] == []


@pytest.mark.parametrize("bad", ["70000", "65536", "abc", "8080x", ""])
def test_invalid_port_is_a_usage_error(bad):
    result = run_tcpkit("port", bad)
    assert result.returncode == 2
    assert "0 to 65535" in result.stderr
    assert result.stdout == ""


def test_missing_port_is_a_usage_error():
    result = run_tcpkit("port")
    assert result.returncode == 2
    assert "PORT" in result.stderr


# --- Unix sockets: the path as the kernel shows it ----------------------------------------------

@pytest.fixture
def short_dir():
    """A directory with a short path: a socket path holds at most 107 bytes."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="tk-port-", dir="/tmp") as name:
        yield Path(name)


def unix_listener(bind_to) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(bind_to)
    listener.listen(4)
    return listener


def unix_report(target: str) -> str:
    result = run_tcpkit("port", target)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", ["a b.sock", "two  spaces .sock"])
def test_regression_a_unix_path_with_spaces_is_found(short_dir, name):
    path = str(short_dir / name)
    with unix_listener(path):
        out = unix_report(f"unix:{path}")
        assert f"pid {os.getpid()} ({own_process_name()})" in out, out
        assert "stale" not in out and "nobody" not in out, out
        facts = json.loads(run_tcpkit("port", f"unix:{path}", "--json").stdout)
        assert facts["listening"] is True
        assert [l["pid"] for l in facts["listeners"]] == [os.getpid()]


def test_regression_an_abstract_name_with_spaces_is_found():
    name = f"tcpkit port test {random.randrange(1 << 30)}"
    with unix_listener("\0" + name):
        out = unix_report(f"unix:@{name}")
        assert f"pid {os.getpid()} ({own_process_name()})" in out, out
        assert "nobody" not in out, out


def test_regression_a_unix_path_bound_under_another_spelling_is_the_same_file(short_dir):
    path = short_dir / "spelled.sock"
    with unix_listener("/" + str(path)):  # the kernel shows "//tmp/...": the same file
        for target in (f"unix:{path}", f"unix:{short_dir}/./spelled.sock"):
            out = unix_report(target)
            assert f"pid {os.getpid()} ({own_process_name()})" in out, out
            assert "stale" not in out, out


def test_regression_a_relative_bind_is_live_not_stale(short_dir):
    import subprocess
    import sys
    server = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys, time\n"
         "s = socket.socket(socket.AF_UNIX); s.bind('rel.sock'); s.listen(4)\n"
         "print('ready', flush=True); sys.stdin.read()\n"],
        cwd=short_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        out = unix_report(f"unix:{short_dir}/rel.sock")
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    assert "stale" not in out, out
    assert f"a server is listening on unix:{short_dir}/rel.sock (connect() succeeds)" in out, out


def test_a_unix_socket_file_whose_server_is_gone_is_stale(short_dir):
    path = str(short_dir / "gone.sock")
    unix_listener(path).close()  # the file stays behind
    out = unix_report(f"unix:{path}")
    assert f"nobody is listening on unix:{path} (the file is stale" in out, out
    assert json.loads(run_tcpkit("port", f"unix:{path}", "--json").stdout)["listening"] is False


# --- process names are outside text (DESIGN.md, decision 10) ------------------------------------

EVIL_NAME = b"\x1b[1A\x1b[2Ksshd"


def test_regression_a_process_name_with_escapes_is_printed_escaped():
    import subprocess
    import sys
    port = pick_free_port()
    server = subprocess.Popen(
        [sys.executable, "-c",
         "import ctypes, socket, sys\n"
         f"ctypes.CDLL(None).prctl(15, {EVIL_NAME!r}, 0, 0, 0)  # PR_SET_NAME\n"
         "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(4)\n"
         "print('ready', flush=True); sys.stdin.read()\n", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        assert Path(f"/proc/{server.pid}/comm").read_bytes().rstrip(b"\n") == EVIL_NAME
        text = port_text(port)
        in_use = run_tcpkit("serve", "--host", "127.0.0.1", "--port", port)
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    assert "\x1b" not in text, repr(text)
    assert f"pid {server.pid} (\\x1b[1A\\x1b[2Ksshd)" in text, text
    assert in_use.returncode == 1, in_use
    assert "\x1b" not in in_use.stderr, repr(in_use.stderr)
    assert f"pid {server.pid} (\\x1b[1A\\x1b[2Ksshd)" in in_use.stderr, in_use.stderr


# Regression: only the first line of /proc/PID/comm was read, so a process
# that named itself "sshd\nx" was shown as "sshd".
def test_regression_a_process_name_with_a_newline_is_shown_whole():
    import subprocess
    import sys
    port = pick_free_port()
    server = subprocess.Popen(
        [sys.executable, "-c",
         "import ctypes, socket, sys\n"
         "ctypes.CDLL(None).prctl(15, b'sshd\\nnot\\x07', 0, 0, 0)  # PR_SET_NAME\n"
         "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(4)\n"
         "print('ready', flush=True); sys.stdin.read()\n", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        text = port_text(port)
        facts = port_json(port)
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    assert f"pid {server.pid} (sshd\\nnot\\x07)" in text, text
    # JSON carries the name as it is, in its own escapes, not a terminal's.
    assert [l["process"] for l in facts["listeners"]] == ["sshd\nnot\x07"], facts


# Regression: "80/tcp", as /etc/services and ss write a port, was taken for
# a Unix socket path (it holds a '/') and reported as a missing file.
@pytest.mark.parametrize("text", [
    "80/tcp", "80/TCP", "http", "http/tcp",
    pytest.param("www", marks=pytest.mark.skipif(
        not Path("/etc/services").exists(),
        reason="no /etc/services: the built-in table has no aliases such as www")),
])
def test_regression_a_port_with_its_protocol_or_a_service_name_is_the_tcp_port(text):
    facts = json.loads(run_tcpkit("port", "--json", text).stdout)
    assert facts["port"] == 80, facts
    assert facts["service"] == "http"


@pytest.mark.parametrize("text", ["53/udp", "domain/udp"])
def test_a_udp_port_is_a_usage_error_that_says_so(text):
    result = run_tcpkit("port", text)
    assert result.returncode == 2, result.stdout
    assert "UDP port" in result.stderr and "tcp" in result.stderr, result.stderr
    assert result.stdout == ""


def test_an_unknown_service_name_is_a_usage_error():
    result = run_tcpkit("port", "no-such-service")
    assert result.returncode == 2
    assert "service name" in result.stderr and "0 to 65535" in result.stderr, result.stderr


# Regression: a Unix socket's path or abstract name, which any user chooses,
# was printed raw, so an ESC sequence in it rewrote the reader's terminal.
def test_regression_a_unix_socket_name_with_escapes_is_printed_escaped():
    name = f"tk\x1b[2J\x1b]0;owned\x07{random.randrange(1 << 30)}"
    with unix_listener("\0" + name):
        out = unix_report(f"unix:@{name}")
        facts = json.loads(run_tcpkit("port", f"unix:@{name}", "--json").stdout)
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    escaped = name.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert f"Unix socket unix:@{escaped}\n" in out, out
    assert f"unix:@{escaped}" in out.split("Listening (state LISTEN):")[1], out
    assert f"pid {os.getpid()}" in out, out
    assert [l["address"] for l in facts["listeners"]] == [f"unix:@{name}"]


# Regression: "unix:" alone was refused as "not an IPv4 or IPv6 address",
# and "80/sctp" was taken for a relative socket path (exit 0).
@pytest.mark.parametrize("text, message", [
    ("unix:", "the socket path is missing in 'unix:'"),
    ("unix:@", "the socket path is missing in 'unix:@'"),
    ("80/sctp", "'80/sctp' is an SCTP port: tcpkit port explains TCP ports (give 80/tcp or 80)"),
    ("9/DCCP", "'9/DCCP' is a DCCP port: tcpkit port explains TCP ports"),
])
def test_regression_a_missing_socket_path_or_another_protocol_is_a_clear_usage_error(text, message):
    result = run_tcpkit("port", text)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr, result.stderr
    assert "IPv4" not in result.stderr, result.stderr
    assert result.stdout == ""


# Regression: /proc/net/unix writes a path raw on its row, so a path with a
# newline was not found (its row broke in two), and the second half of such
# a path could forge a row: a listener that does not exist. The kernel's
# sock_diag interface gives the path as its bytes.
def test_regression_a_unix_path_with_a_newline_is_found_and_forges_no_row(short_dir):
    forged = f"@forged{random.randrange(1 << 30)}"
    name = f"n\n0000000000000000: 00000002 00000000 00010000 0001 01 1 {forged}"
    path = str(short_dir / name)
    with unix_listener(path):
        out = unix_report(f"unix:{path}")
        facts = json.loads(run_tcpkit("port", f"unix:{path}", "--json").stdout)
        forged_facts = json.loads(run_tcpkit("port", f"unix:{forged}", "--json").stdout)
    assert f"pid {os.getpid()} ({own_process_name()})" in out, out
    assert "\\n0000000000000000" in out and "\n0000000000000000" not in out, out
    assert [(l["address"], l["pid"]) for l in facts["listeners"]] == [(f"unix:{path}", os.getpid())]
    assert forged_facts["listeners"] == [] and forged_facts["listening"] is False, forged_facts


def udp_only_service():
    """A service that /etc/services lists for UDP and not for TCP ("ntp")."""
    try:
        lines = Path("/etc/services").read_text(errors="replace").splitlines()
    except OSError:
        return None
    protocols = {}
    for line in lines:
        fields = line.split("#")[0].split()
        if len(fields) >= 2 and "/" in fields[1]:
            port, protocol = fields[1].split("/", 1)
            for name in [fields[0], *fields[2:]]:
                protocols.setdefault(name, {})[protocol] = port
    for name, ports in sorted(protocols.items()):
        if set(ports) == {"udp"}:
            return name, ports["udp"]
    return None


# Regression: a service that /etc/services lists for UDP only ("ntp") was
# refused as unknown, with "give a service name from /etc/services", though
# it is there.
@pytest.mark.skipif(udp_only_service() is None, reason="/etc/services has no UDP-only service")
def test_regression_a_udp_only_service_name_is_refused_as_such():
    name, port = udp_only_service()
    for text in (name, f"{name}/tcp"):
        result = run_tcpkit("port", text)
        assert result.returncode == 2, result.stdout
        assert (f"'{text}' is not a TCP service: /etc/services lists it as {port}/udp only"
                in result.stderr), result.stderr
        assert result.stdout == ""


# Regression: a datagram socket bound to a path (a syslog's /dev/log) was
# "no listener ..., and connect() cannot tell whether one is there", though
# the kernel's table holds it and its process.
def test_regression_a_bound_datagram_socket_is_named_with_its_process(short_dir):
    path = str(short_dir / "dgram.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        out = unix_report(f"unix:{path}")
        facts = json.loads(run_tcpkit("port", f"unix:{path}", "--json").stdout)
    assert "A datagram socket (SOCK_DGRAM) is bound there" in out, out
    assert re.search(rf"unix:{re.escape(path)}\s+pid {os.getpid()} ", out), out
    assert "cannot tell" not in out and "nobody" not in out, out
    assert facts["listening"] is False and facts["listeners"] == [], facts
    assert [(d["address"], d["pid"]) for d in facts["datagram"]] == [(f"unix:{path}", os.getpid())]

"""Black-box tests of `tcpkit relay --api`: toxiproxy's HTTP API and toxics.

The API is driven the way test suites drive toxiproxy: by its own Node
client (toxiproxy-node-client from npm, run by chaos_client.js) and by the
`curl` commands of toxiproxy's README. Each toxic's effect is measured on a
real loopback connection by the Node script and asserted here, within 10%
where a number is set (latency, bandwidth). Timing assertions on a shared
machine are bounds with that tolerance; each scenario has its own deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import (DEFAULT_TIMEOUT, build_dir, ipv6_loopback_available, pick_free_port, scaled,
                      strace_works, tcpkit_path)
from hostile_util import cpu_seconds
from serve_util import connect, recv_exact, recv_until_eof, start_serve

HERE = Path(__file__).resolve().parent
CLIENT_VERSION = "4.1.0"
API_RE = r"chaos API on http://(?P<address>\S+)"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The npm package, installed once into the build tree (npm's registry
    is the one network source these tests use; scripts/install-deps puts
    node and npm in place)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed: run scripts/install-deps")
    prefix = build_dir() / "npm"
    package = prefix / "node_modules" / "toxiproxy-node-client"
    if not (package / "package.json").is_file():
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        "--no-save", f"toxiproxy-node-client@{CLIENT_VERSION}"],
                       check=True, timeout=180, capture_output=True)
    return package


def start_chaos(tcpkit_process, *args) -> tuple[object, str]:
    relay = tcpkit_process("relay", "--api", "127.0.0.1:0", *args)
    match = relay.wait_for_line(API_RE, stream="stdout")
    return relay, match.group("address")


def run_scenario(node_client: Path, api: str, scenario: str, timeout: float = 30) -> dict:
    env = dict(os.environ, API=api, TOXIPROXY_CLIENT=str(node_client))
    done = subprocess.run(["node", str(HERE / "chaos_client.js"), scenario], env=env,
                          capture_output=True, text=True, timeout=scaled(timeout))
    lines = done.stdout.strip().splitlines()
    assert lines, f"{scenario}: no output\n{done.stderr}"
    result = json.loads(lines[-1])
    assert done.returncode == 0 and "error" not in result, f"{scenario}: {result}\n{done.stderr}"
    return result


@pytest.fixture
def chaos(tcpkit_process, node_client):
    relay, api = start_chaos(tcpkit_process)
    return lambda scenario: run_scenario(node_client, api, scenario)


def within(value: float, target: float, tolerance: float = 0.10) -> bool:
    return abs(value - target) <= tolerance * target


# ---- the API, through toxiproxy's client --------------------------------------

def test_node_client_drives_the_api(chaos):
    r = chaos("api")
    assert json.loads(r["version"])["version"]
    assert "409" in r["conflict"]
    assert "404" in r["missing"]
    assert r["toxic"] == {"name": "latency_downstream", "type": "latency", "stream": "downstream",
                          "toxicity": 1, "attributes": {"latency": 5, "jitter": 0}}
    assert r["updated"]["attributes"]["latency"] == 7
    assert r["names"] == ["api", "pop"]
    assert r["enabledAfterDisable"] is False
    assert r["refused"] == "ECONNREFUSED"
    assert r["echoed"] == "back again\n"
    assert r["resetEnabled"] is True


def test_latency_within_ten_percent_on_a_live_connection(chaos):
    r = chaos("latency")
    assert within(r["withToxic"] - r["base"], 200), r
    assert r["after"] < 50, r
    assert r["zero"] < 100, f"toxicity 0 fired: {r}"


def test_bandwidth_within_ten_percent(chaos):
    r = chaos("bandwidth")
    assert r["bytes"] == 250000
    assert within(r["bytesPerSecond"], 100 * 1000), r


def test_slicer_cuts_average_size_plus_minus_variation(chaos):
    r = chaos("slicer")
    sizes = r["sizes"]
    assert sum(sizes) == 2000 and r["how"] == "end"
    # A read holds one slice, or several when the reader was late (a loaded
    # machine): never a part of one, and mostly exactly one.
    assert all(s >= 80 for s in sizes[:-1]), sizes
    assert sum(80 <= s <= 120 for s in sizes) >= 0.75 * len(sizes), sizes
    assert len(sizes) >= 0.75 * (2000 // 120), sizes


def test_limit_data_closes_after_its_bytes(chaos):
    r = chaos("limit_data")
    assert r["bytes"] == 1000 and r["how"] in ("end", "close"), r


def test_timeout_holds_then_closes(chaos):
    r = chaos("timeout")
    assert r["heldBytes"] == 0, "timeout 0 let data through"
    assert r["afterRemove"] == "found\n"
    assert r["how"] in ("end", "close") and 300 * 0.9 <= r["closedAfterMs"] < 2000, r


def test_reset_peer_sends_rst(chaos):
    # Its 200 ms count from the reply, which it drops: the connection was
    # idle for 300 ms before that and stayed up.
    r = chaos("reset_peer")
    assert r["how"] == "ECONNRESET" and r["bytes"] == 0, r
    assert 200 * 0.9 <= r["ms"] - r["sentMs"] < 2000, r


def test_slow_close_delays_the_fin(chaos):
    r = chaos("slow_close")
    assert r["how"] in ("end", "close")
    assert r["endMs"] - r["dataMs"] >= 300 * 0.9, r


# ---- extensions ----------------------------------------------------------------

def test_frame_toxics_drop_duplicate_corrupt_and_delay(chaos):
    r = chaos("frames")
    assert r["drop2"] == "a\nc\n"
    assert r["dup1"] == "a\na\nb\n"
    assert r["corruptMatch"].startswith("plain\n") and r["corruptMatch"] != "plain\nsecret\n"
    assert len(r["corruptMatch"]) == 13
    assert r["delayMs"] >= 300 * 0.9 and r["nextMs"] < 100, r
    assert r["length"] == "\0\0\0\x03one\0\0\0\x05three"


def test_toxics_scoped_to_client_cidrs(chaos):
    r = chaos("cidr")
    assert r["outside"] < 100 and within(r["inside"], 300), r


def test_unplug_after_bytes_and_after_time(chaos):
    r = chaos("unplug")
    # 1000 bytes both ways: the 10 of "send 5000\n" up, 990 down. (Node
    # reports an RST after data as an end: libuv takes the RDHUP for EOF;
    # the next test sees the RST with Python.)
    assert r["bytes"] == 990, r
    assert r["timedHow"] in ("end", "close") and r["timedMs"] >= 300 * 0.9, r


def api_call(api: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    request = urllib.request.Request(f"http://{api}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=scaled(DEFAULT_TIMEOUT)) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextlib.contextmanager
def proxy_with_toxic(api: str, name: str, toxic: dict):
    """An upstream listener and a proxy in front of it with one toxic:
    yields the listener and the proxy's port."""
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(1)
        up = upstream.getsockname()[1]
        code, proxy = api_call(api, "POST", "/proxies", {"name": name, "listen": "127.0.0.1:0",
                                                          "upstream": f"127.0.0.1:{up}"})
        assert code == 201, proxy
        code, body = api_call(api, "POST", f"/proxies/{name}/toxics", toxic)
        assert code == 200, body
        yield upstream, int(proxy["listen"].rsplit(":", 1)[1])


@contextlib.contextmanager
def toxic_pair(api: str, name: str, toxic: dict):
    """A client connected through a new proxy with one toxic, and the
    upstream's end of that connection, once the pair is up: yields both."""
    with proxy_with_toxic(api, name, toxic) as (upstream, port):
        with connect(port) as client:
            server, _ = upstream.accept()
            with server:
                yield client, server


def echo_proxy(tcpkit_process, api: str, name: str, listen: str = "127.0.0.1:0") -> dict:
    """A proxy in front of a `tcpkit serve --mode echo`: answers the proxy."""
    echo, echo_port = start_serve(tcpkit_process, "--mode", "echo", "--quiet")
    code, proxy = api_call(api, "POST", "/proxies", {"name": name, "listen": listen,
                                                     "upstream": f"127.0.0.1:{echo_port}"})
    assert code == 201, proxy
    return proxy


def test_unplug_resets_after_exactly_its_bytes(tcpkit_process):
    relay, api = start_chaos(tcpkit_process)
    unplug = {"type": "unplug", "attributes": {"after_bytes": 1000, "mode": "reset"}}
    with toxic_pair(api, "u", unplug) as (client, server):
        server.sendall(b"x" * 5000)
        got, how = recv_until_eof(client)
    assert len(got) == 1000 and how == "reset", f"{len(got)} bytes, then {how!r}"


def test_regression_a_slicer_delay_below_a_millisecond_is_kept(tcpkit_process):
    # toxiproxy's slicer delay is in microseconds, but the loop slept in
    # whole milliseconds: 1000 pieces 20 us apart took over a second.
    relay, api = start_chaos(tcpkit_process)
    pieces, delay_us = 1000, 20
    slicer = {"type": "slicer",
              "attributes": {"average_size": 1, "size_variation": 0, "delay": delay_us}}
    with toxic_pair(api, "s", slicer) as (client, server):
        started = time.monotonic()
        server.sendall(b"x" * pieces)
        server.shutdown(socket.SHUT_WR)
        got, how = recv_until_eof(client)
        took = time.monotonic() - started
    assert got == b"x" * pieces and how is None, f"{len(got)} bytes, then {how!r}"
    assert took >= pieces * delay_us / 1e6, f"{took:.3f} s: the pauses were not kept"
    # A millisecond per pause takes over 1 s; 0.1 s is usual, and the bound
    # leaves room for a sanitizer build.
    assert took < 0.9, f"{took:.3f} s for {pieces} pauses of {delay_us} us"


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_regression_a_frame_toxic_passes_an_unfinished_last_frame_before_the_fin(
        tcpkit_process, stream):
    # A frame toxic held the bytes after the last newline until the rest of
    # their frame came; at the FIN they were dropped ("TAIL" never reached
    # the server, and the server's whole reply never reached the client),
    # although the toxic (the 5th frame) never fired.
    relay, api = start_chaos(tcpkit_process)
    frame = {"type": "frame", "stream": stream,
             "attributes": {"codec": "line", "action": "drop", "nth": 5}}
    with toxic_pair(api, "f", frame) as (client, server):
        client.sendall(b"one\ntwo\nTAIL")
        client.shutdown(socket.SHUT_WR)
        got, how = recv_until_eof(server)
        assert (got, how) == (b"one\ntwo\nTAIL", None)
        server.sendall(b"reply\nwithout a newline")
        server.shutdown(socket.SHUT_WR)
        got, how = recv_until_eof(client)
        assert (got, how) == (b"reply\nwithout a newline", None)


@pytest.mark.parametrize("codec", ["length", "line"])
def test_regression_a_frame_over_a_mebibyte_passes_untouched_and_framing_goes_on_after_it(
        tcpkit_process, codec):
    # A frame over the toxic's 1 MiB passed only as far as it had arrived;
    # the next read was cut into frames from the middle of its payload, so
    # records inside it were duplicated (2 MiB came out twice), and the
    # real frame after it was missed.
    relay, api = start_chaos(tcpkit_process)
    if codec == "length":
        payload = (struct.pack(">I", 4) + b"PING") * (300 * 1024)
        big = struct.pack(">I", len(payload)) + payload
        ping = struct.pack(">I", 4) + b"PING"
    else:
        big = b"PING " * (300 * 1024) + b"\n"
        ping = b"PING\n"
    frame = {"type": "frame", "stream": "upstream",
             "attributes": {"codec": codec, "action": "duplicate", "match": "PING"}}
    with toxic_pair(api, "f", frame) as (client, server):
        for at in range(0, len(big), 65536):
            client.sendall(big[at:at + 65536])
        client.sendall(ping)
        client.shutdown(socket.SHUT_WR)
        got, how = recv_until_eof(server, timeout=20)
    assert how is None and len(got) == len(big) + 2 * len(ping), f"{len(got)} bytes, then {how!r}"
    assert got == big + ping + ping


def test_regression_a_frame_toxic_costs_no_more_per_frame_for_a_larger_read(tcpkit_process):
    # Each frame was found by copying all the bytes after it: a read of
    # 4-byte lines cost its size per line, and 8 MB through a frame toxic
    # that matched nothing took about 9 s of the relay's CPU (1 MB/s),
    # during which every other proxy of the relay waited. Now it is a few
    # hundredths of a second; the bound is wide for sanitizer builds.
    relay, api = start_chaos(tcpkit_process)
    data = b"abc\n" * (2 * 1024 * 1024)
    frame = {"type": "frame", "stream": "upstream",
             "attributes": {"codec": "line", "action": "drop", "match": "NEVER"}}
    cpu_before = cpu_seconds(relay.pid)
    with toxic_pair(api, "f", frame) as (client, server):
        sender = threading.Thread(target=lambda: (client.sendall(data),
                                                  client.shutdown(socket.SHUT_WR)))
        sender.start()
        got, how = recv_until_eof(server, timeout=60)
        sender.join()
    assert how is None and got == data, f"{len(got)} of {len(data)} bytes, then {how!r}"
    spent = cpu_seconds(relay.pid) - cpu_before
    assert spent < 3.0, f"the relay spent {spent:.2f} s of CPU on 8 MB of lines"


@pytest.mark.parametrize("toxic,change", [
    ({"type": "latency", "attributes": {"latency": 100000}}, "DELETE"),
    ({"type": "latency", "attributes": {"latency": 100000}}, {"attributes": {"latency": 0}}),
    ({"type": "slicer", "attributes": {"average_size": 1, "delay": 100_000_000}}, "DELETE"),
])
def test_regression_removing_or_easing_a_toxic_lets_the_data_it_holds_go(tcpkit_process, toxic,
                                                                          change):
    # Data already held by a latency toxic kept its old due time when the
    # toxic was removed or set to 0, and so did data read after that (it
    # queued behind): a 5 s latency removed after 0.5 s still answered at
    # 5 s. A removed slicer's pause held the next piece for its old delay.
    relay, api = start_chaos(tcpkit_process)
    with toxic_pair(api, "t", toxic) as (client, server):
        server.sendall(b"held")
        time.sleep(0.2)
        path = f"/proxies/t/toxics/{toxic['type']}_downstream"
        if change == "DELETE":
            assert api_call(api, "DELETE", path)[0] == 204
        else:
            assert api_call(api, "POST", path, change)[0] == 200
        assert recv_exact(client, 4, timeout=5) == b"held"
        server.sendall(b"after")
        assert recv_exact(client, 5, timeout=5) == b"after"


def test_regression_a_refused_proxy_update_changes_nothing(tcpkit_process, tmp_path):
    # An update whose new address was refused (400) had already stopped the
    # proxy and stored the address: it was left disabled, pointing nowhere.
    # And a proxy listening on a Unix socket could not be updated at all:
    # its unix: address was not understood, so every update disabled it.
    echo, echo_port = start_serve(tcpkit_process, "--mode", "echo", "--quiet")
    path = tmp_path / "r.sock"
    relay, api = start_chaos(tcpkit_process, "--listen", f"unix:{path}", "--to",
                             f"127.0.0.1:{echo_port}")
    code, body = api_call(api, "POST", "/proxies/relay", {"upstream": "127.0.0.1:0"})
    assert code == 400 and "port 0" in body["error"], body
    code, proxy = api_call(api, "GET", "/proxies/relay")
    assert proxy["enabled"] is True and proxy["upstream"] == f"127.0.0.1:{echo_port}", proxy
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.sendall(b"still here")
        assert recv_exact(client, 10) == b"still here"
    # Moving the upstream of a Unix-socket proxy works.
    code, proxy = api_call(api, "POST", "/proxies/relay", {"upstream": f"localhost:{echo_port}"})
    assert code == 200 and proxy["enabled"] is True, proxy
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.sendall(b"moved")
        assert recv_exact(client, 5) == b"moved"


def test_regression_a_proxy_named_with_a_space_or_slash_can_be_reached(tcpkit_process):
    # The API took such names but never decoded the path, so "/proxies/a%20b"
    # was not found: the proxy could not be read, changed or deleted.
    relay, api = start_chaos(tcpkit_process)
    for name, path in [("a b", "a%20b"), ("x/y", "x%2Fy"), ("中", "%E4%B8%AD")]:
        code, _ = api_call(api, "POST", "/proxies", {"name": name, "listen": "127.0.0.1:0",
                                                     "upstream": "127.0.0.1:9"})
        assert code == 201
        code, proxy = api_call(api, "GET", f"/proxies/{path}")
        assert code == 200 and proxy["name"] == name, proxy
        code, toxic = api_call(api, "POST", f"/proxies/{path}/toxics",
                               {"name": "slow down", "type": "latency"})
        assert code == 200, toxic
        assert api_call(api, "GET", f"/proxies/{path}/toxics/slow%20down")[0] == 200
        assert api_call(api, "DELETE", f"/proxies/{path}")[0] == 204
    assert api_call(api, "GET", "/proxies") == (200, {})
    code, body = api_call(api, "GET", "/proxies/a%2")
    assert code == 400 and "malformed request path" in body["error"], body


def test_names_with_control_characters_are_refused(tcpkit_process):
    # A name with CR LF would forge lines in logs and in /metrics.
    relay, api = start_chaos(tcpkit_process)
    code, body = api_call(api, "POST", "/proxies", {"name": "c\r\nforged 1", "listen": "127.0.0.1:0",
                                                    "upstream": "127.0.0.1:9"})
    assert code == 400 and "control characters" in body["error"], body
    code, _ = api_call(api, "POST", "/proxies", {"name": "p", "listen": "127.0.0.1:0",
                                                 "upstream": "127.0.0.1:9"})
    assert code == 201
    code, body = api_call(api, "POST", "/proxies/p/toxics", {"name": "t\x1b[2J", "type": "latency"})
    assert code == 400 and "control characters" in body["error"], body
    assert api_call(api, "GET", "/proxies/p/toxics") == (200, [])


def test_regression_an_updated_toxic_restarts_its_timer_on_open_connections(tcpkit_process):
    # toxiproxy restarts an updated toxic on live connections; the relay
    # kept the old timer: a timeout toxic of 0 (hold for ever) updated to
    # 200 ms left an open connection silent for good, and a reset_peer of
    # 100 s updated to 100 ms sent no RST. The new time counts from the update.
    relay, api = start_chaos(tcpkit_process)
    cases = [("POST", {"type": "timeout", "attributes": {"timeout": 0}}, 200, None),
             ("PATCH", {"type": "reset_peer", "attributes": {"timeout": 100000}}, 100, "reset")]
    for i, (verb, toxic, ms, ending) in enumerate(cases):
        with toxic_pair(api, f"p{i}", toxic) as (client, server):
            started = time.monotonic()
            code, body = api_call(api, verb, f"/proxies/p{i}/toxics/{toxic['type']}_downstream",
                                  {"attributes": {"timeout": ms}})
            assert code == 200 and body["attributes"]["timeout"] == ms, body
            # A reset_peer counts from the first data in its direction.
            server.sendall(b"x")
            got, how = recv_until_eof(client, timeout=3)
            took = time.monotonic() - started
        assert got == b"" and how == ending, f"{toxic['type']}: {len(got)} bytes, then {how!r}"
        assert took >= ms / 1000 * 0.9, f"{toxic['type']} ended {took:.3f} s after the update"


def test_regression_a_toxic_moved_to_the_other_stream_restarts_its_timer(tcpkit_process):
    # An update that changed only a toxic's stream kept its old timer: a
    # 1 s timeout moved upstream, with 3 s, at 0.5 s still closed at 1 s.
    relay, api = start_chaos(tcpkit_process)
    toxic = {"type": "timeout", "attributes": {"timeout": 1000}}
    with toxic_pair(api, "p", toxic) as (client, server):
        started = time.monotonic()
        time.sleep(0.5)
        code, body = api_call(api, "POST", "/proxies/p/toxics/timeout_downstream",
                              {"stream": "upstream", "attributes": {"timeout": 3000}})
        assert code == 200 and body["stream"] == "upstream", body
        got, how = recv_until_eof(client, timeout=10)
        took = time.monotonic() - started
    assert got == b"" and how is None, (got, how)
    assert took >= 0.5 + 3.0 * 0.9, f"closed {took:.2f} s after the connection, not 3 s after the update"


def test_a_reset_peer_removed_before_its_rst_lets_all_it_held_go(tcpkit_process):
    # Counting down, it holds back what comes; removed, nothing of it may be
    # missing (a hole in the middle of the stream is no fault TCP makes).
    relay, api = start_chaos(tcpkit_process)
    toxic = {"type": "reset_peer", "attributes": {"timeout": 100000}}
    with toxic_pair(api, "r", toxic) as (client, server):
        server.sendall(b"one ")  # starts the count
        time.sleep(0.1)
        server.sendall(b"two")
        time.sleep(0.1)
        assert api_call(api, "DELETE", "/proxies/r/toxics/reset_peer_downstream")[0] == 204
        assert recv_exact(client, 7) == b"one two"


def test_regression_limit_data_counts_from_when_it_is_added(tcpkit_process):
    # A limit_data added to a connection that had carried 1000 bytes cut
    # it at once: it counted the connection's bytes, not its own (toxiproxy
    # counts from when the toxic is added).
    relay, api = start_chaos(tcpkit_process)
    proxy = echo_proxy(tcpkit_process, api, "l")
    with connect(int(proxy["listen"].rsplit(":", 1)[1])) as client:
        client.sendall(b"a" * 1000)
        assert recv_exact(client, 1000) == b"a" * 1000
        limit = {"type": "limit_data", "attributes": {"bytes": 100}}
        assert api_call(api, "POST", "/proxies/l/toxics", limit)[0] == 200
        client.sendall(b"b" * 500)
        got, how = recv_until_eof(client)
    assert got == b"b" * 100 and how is None, f"{len(got)} bytes, then {how!r}"


def test_regression_delays_that_sum_past_int64_nanoseconds_still_hold_the_data(tcpkit_process):
    # Each toxic's delay is at most 2^40 ms, but nine latency toxics (or
    # nine frame delays) summed to more nanoseconds than an int64 holds:
    # the deadline wrapped into the past and the data passed at once. The
    # sum is now capped at 2^40 ms (about 35 years).
    relay, api = start_chaos(tcpkit_process)
    longest = 1 << 40
    latency = {"type": "latency", "attributes": {"latency": longest}}
    frame = {"type": "frame", "attributes": {"codec": "line", "action": "delay", "delay": longest}}
    for kind, toxic in (("latency", latency), ("frame", frame)):
        with proxy_with_toxic(api, kind, dict(toxic, name="t0")) as (upstream, port):
            for i in range(1, 9):
                code, body = api_call(api, "POST", f"/proxies/{kind}/toxics", dict(toxic, name=f"t{i}"))
                assert code == 200, body
            with connect(port) as client:
                server, _ = upstream.accept()
                with server:
                    server.sendall(b"hello\n")
                    client.settimeout(0.5)
                    with pytest.raises(socket.timeout, match="timed out"):
                        got = client.recv(100)
                        pytest.fail(f"{kind}: nine delays of 2^40 ms let {got!r} through")


def test_regression_an_updated_toxic_rolls_again_against_its_new_toxicity(tcpkit_process):
    # toxiproxy rolls against a toxic's toxicity whenever it restarts it,
    # updates included; the relay kept each open connection's first roll,
    # so a reset_peer of toxicity 0 updated to 1 never reset a connection
    # already open (and one of toxicity 1 updated to 0 still fired).
    relay, api = start_chaos(tcpkit_process)
    toxic = {"type": "reset_peer", "toxicity": 0, "attributes": {"timeout": 50}}
    with proxy_with_toxic(api, "p", toxic) as (upstream, port):
        with connect(port) as client:
            server, _ = upstream.accept()  # the pair is up, with the toxic not firing
            with server:
                server.sendall(b"before")
                assert recv_exact(client, 6) == b"before"
                code, body = api_call(api, "POST", "/proxies/p/toxics/reset_peer_downstream",
                                      {"toxicity": 1})
                assert code == 200 and body["toxicity"] == 1, body
                server.sendall(b"now")  # its clock starts at data in its direction
                got, how = recv_until_eof(client, timeout=3)
        assert got == b"" and how == "reset", f"{len(got)} bytes, then {how!r}"
        code, body = api_call(api, "POST", "/proxies/p/toxics/reset_peer_downstream",
                              {"attributes": {"timeout": 100000}})
        assert code == 200, body
        with connect(port) as client:
            server, _ = upstream.accept()  # the toxic fires here, after 100 s
            with server:
                code, body = api_call(api, "POST", "/proxies/p/toxics/reset_peer_downstream",
                                      {"toxicity": 0, "attributes": {"timeout": 50}})
                assert code == 200 and body["toxicity"] == 0, body
                time.sleep(scaled(0.3))  # six times the toxic's time: no reset came
                server.sendall(b"after")
                assert recv_exact(client, 5) == b"after"


def test_seed_replays_the_same_fault_schedule(tcpkit_process, node_client):
    runs = []
    for seed in ("7", "7", "8"):
        relay, api = start_chaos(tcpkit_process, "--seed", seed)
        runs.append(run_scenario(node_client, api, "seeded")["text"])
        relay.stop()
    lines = runs[0].split("\n")[:-1]
    assert len(lines) == 20 and all(line != "a" * 32 and len(line) == 32 for line in lines)
    assert runs[0] == runs[1], "the same seed corrupted other bytes"
    assert runs[0] != runs[2], "another seed corrupted the same bytes"


# ---- curl, as in toxiproxy's README; flags and config file ---------------------

def curl(*args) -> tuple[int, str]:
    done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=scaled(DEFAULT_TIMEOUT))
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_readme_curl_examples(tcpkit_process):
    # toxiproxy's own port, as the README has it, unless something holds it.
    port = 8474 if not _port_taken(8474) else pick_free_port()
    relay = tcpkit_process("relay", "--api", f"127.0.0.1:{port}")
    relay.wait_for_line(API_RE, stream="stdout")
    base = f"localhost:{port}"
    listen = pick_free_port()
    code, body = curl("-X", "POST", f"{base}/proxies", "-d",
                      f'{{"name": "shopify_test_redis_master", "listen": "127.0.0.1:{listen}", '
                      f'"upstream": "127.0.0.1:6379"}}')
    assert code == 201 and json.loads(body)["listen"] == f"127.0.0.1:{listen}"
    code, body = curl("-X", "POST", f"{base}/proxies/shopify_test_redis_master/toxics", "-d",
                      '{"type":"latency", "attributes":{"latency":1000}}')
    assert code == 200 and json.loads(body)["name"] == "latency_downstream"
    code, body = curl("-X", "POST", f"{base}/proxies/shopify_test_redis_master/toxics", "-d",
                      '{"type":"latency", "attributes":{"latency":1000}}')
    assert code == 409 and json.loads(body) == {"error": "toxic already exists", "status": 409}
    code, body = curl(f"{base}/proxies/shopify_test_redis_master/toxics")
    assert code == 200 and len(json.loads(body)) == 1
    code, body = curl("-X", "POST", f"{base}/proxies/shopify_test_redis_master", "-d", '{"enabled": false}')
    assert code == 200 and json.loads(body)["enabled"] is False
    code, _ = curl("-X", "DELETE", f"{base}/proxies/shopify_test_redis_master/toxics/latency_downstream")
    assert code == 204
    code, body = curl("-X", "POST", f"{base}/proxies/shopify_test_redis_master/toxics", "-d",
                      '{"type":"nonsense"}')
    assert code == 400 and json.loads(body)["error"] == "invalid toxic type"
    code, _ = curl("-X", "POST", f"{base}/reset")
    assert code == 204
    code, body = curl(f"{base}/proxies/missing")
    assert code == 404 and json.loads(body) == {"error": "proxy not found", "status": 404}
    code, body = curl(f"{base}/metrics")
    assert code == 200 and 'tcpkit_chaos_toxics{proxy="shopify_test_redis_master"} 0' in body
    code, _ = curl("-X", "DELETE", f"{base}/proxies/shopify_test_redis_master")
    assert code == 204


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_api_refuses_hostile_requests(tcpkit_process):
    relay, api = start_chaos(tcpkit_process)
    code, _ = curl("-H", "Host: attacker.example", f"http://{api}/proxies")
    assert code == 403, "a rebound DNS name reached the API"
    host, port = api.rsplit(":", 1)
    with connect(int(port)) as s:
        s.sendall(b"POST /proxies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    with connect(int(port)) as s:
        s.sendall(b"GET /proxies HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    with connect(int(port)) as s:
        s.sendall(b"POST /proxies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\n{[}")
        assert b'"bad request body"' in s.recv(1000)


def test_regression_api_cuts_off_a_request_trickled_past_its_deadline(tcpkit_process):
    # A request must arrive whole within the API's deadline (10 s of the
    # connection's start). A byte every second keeps the idle timeout from
    # firing, so only the deadline can end this one; its timer used to be
    # cancelled as soon as it was set, and the trickle went on for ever.
    relay, api = start_chaos(tcpkit_process)
    host, port = api.rsplit(":", 1)
    start = time.monotonic()
    with connect(int(port), timeout=1) as s:
        request = b"GET /proxies HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        closed_after = None
        for byte in request:
            if time.monotonic() - start > 30:
                break
            try:
                s.sendall(bytes([byte]))
                if s.recv(100) == b"":
                    closed_after = time.monotonic() - start
                    break
            except socket.timeout:
                pass  # still open: the next byte in a second
            except OSError:
                closed_after = time.monotonic() - start
                break
    assert closed_after is not None, "a request trickled for 30 s was never cut off"
    assert 9 <= closed_after <= 20, f"cut off after {closed_after:.1f} s, not at the 10 s deadline"


def through(port: int, upstream: socket.socket, data: bytes) -> tuple[socket.socket, socket.socket]:
    """Connects a client to the relay's `port`, accepts its connection on
    `upstream` and checks that `data` gets there; answers both sockets."""
    client = connect(port)
    server, _ = upstream.accept()
    client.sendall(data)
    server.settimeout(scaled(DEFAULT_TIMEOUT))
    assert server.recv(len(data) + 100) == data
    return client, server


def test_flags_proxy_and_config_file(tcpkit_process, tmp_path):
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(4)
    up = upstream.getsockname()[1]
    listen = pick_free_port()
    config = tmp_path / "toxiproxy.json"
    config.write_text(json.dumps([{"name": "from_file", "listen": f"127.0.0.1:{listen}",
                                   "upstream": f"127.0.0.1:{up}"}]))
    relay, api = start_chaos(tcpkit_process, "--config", str(config), "--listen", "127.0.0.1:0",
                             "--to", f"127.0.0.1:{up}", "--delay", "1")
    code, body = curl(f"http://{api}/proxies")
    proxies = json.loads(body)
    assert code == 200 and sorted(proxies) == ["from_file", "relay"]
    assert proxies["from_file"]["listen"] == f"127.0.0.1:{listen}"
    relay_port = int(proxies["relay"]["listen"].rsplit(":", 1)[1])
    for port in (listen, relay_port):
        client, server = through(port, upstream, b"hello\n")
        client.close()
        server.close()
    upstream.close()
    relay.signal(signal.SIGINT)
    assert relay.wait() == 0, relay.describe()


def test_regression_flag_faults_stay_with_the_flags_proxy(tcpkit_process):
    # The flags' faults were copied into every proxy the API created, where
    # GET showed no toxic and /reset could not remove them: a proxy made
    # beside `--delay 2000 --close-after 100` held every read for 2 s and
    # closed after 100 bytes.
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(4)
    up = upstream.getsockname()[1]
    relay, api = start_chaos(tcpkit_process, "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{up}",
                             "--delay", "2000", "--close-after", "100")
    code, proxy = api_call(api, "POST", "/proxies", {"name": "plain", "listen": "127.0.0.1:0",
                                                      "upstream": f"127.0.0.1:{up}"})
    assert code == 201 and proxy["toxics"] == []
    data = bytes(range(256)) * 16
    started = time.monotonic()
    client, server = through(int(proxy["listen"].rsplit(":", 1)[1]), upstream, data[:200])
    with client, server:
        server.sendall(data)
        assert recv_exact(client, len(data)) == data
    assert time.monotonic() - started < 1.5, "the API's proxy held the data for the flags' --delay"
    # The flags proxy keeps them: it closes after 100 bytes.
    _, proxies = api_call(api, "GET", "/proxies")
    with connect(int(proxies["relay"]["listen"].rsplit(":", 1)[1])) as client:
        server, _ = upstream.accept()
        with server:
            server.sendall(data)
            got, how = recv_until_eof(client)
    assert len(got) == 100 and how is None, f"{len(got)} bytes, then {how!r}"
    upstream.close()


def test_regression_populate_checks_every_entry_before_it_changes_anything(tcpkit_process):
    # /populate created the entries before a bad one and left them
    # listening, let a second entry of the same name replace the first, and
    # its errors did not say which field or entry.
    relay, api = start_chaos(tcpkit_process)
    good = {"name": "first", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}
    code, body = api_call(api, "POST", "/populate", [good, {"name": "second"}])
    assert code == 400 and body["error"] == "missing required field: upstream at proxy 2", body
    code, body = api_call(api, "POST", "/populate", [good, {"listen": "127.0.0.1:0", "upstream": "x:1"}])
    assert code == 400 and body["error"] == "missing required field: name at proxy 2", body
    code, body = api_call(api, "POST", "/populate", [good, dict(good, upstream="127.0.0.1:10")])
    assert code == 400 and body["error"] == 'duplicate proxy name "first"', body
    code, body = api_call(api, "POST", "/populate", [good, dict(good, name="x", enabled="false")])
    assert code == 400 and body["error"].startswith("bad request body: enabled must be true or false")
    assert api_call(api, "GET", "/proxies") == (200, {})
    # A listen that fails takes back what the list had created.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        code, body = api_call(api, "POST", "/populate", [good, dict(good, name="b", listen=busy)])
        assert code == 500 and busy in body["error"], body
    assert api_call(api, "GET", "/proxies") == (200, {})
    code, body = api_call(api, "POST", "/populate", [good])
    assert code == 201 and [p["name"] for p in body["proxies"]] == ["first"]
    # A non-boolean enabled is refused, as toxiproxy's decoder refuses it.
    for value in ("false", 0):
        code, body = api_call(api, "POST", "/proxies/first", {"enabled": value})
        assert code == 400 and "enabled must be true or false" in body["error"], body
    code, body = api_call(api, "POST", "/proxies", {"name": "n", "upstream": "127.0.0.1:9", "enabled": 1})
    assert code == 400, body
    assert api_call(api, "GET", "/proxies/first")[1]["enabled"] is True
    code, body = api_call(api, "POST", "/proxies", {"name": "n"})
    assert code == 400 and body["error"] == "missing required field: upstream", body


def test_regression_a_failed_populate_puts_back_the_proxies_it_would_replace(tcpkit_process):
    # A list that replaced proxy "a" (new upstream) and then failed on
    # another entry's listen deleted "a" for good. It is put back where it
    # listened, with its toxic (its clients were closed by the replacement,
    # as toxiproxy closes them). And the list goes in order, as toxiproxy's
    # does: a proxy that moves off a port frees it for a later entry.
    relay, api = start_chaos(tcpkit_process)
    a = echo_proxy(tcpkit_process, api, "a")
    latency = {"type": "latency", "attributes": {"latency": 1}}
    assert api_call(api, "POST", "/proxies/a/toxics", latency)[0] == 200
    port = int(a["listen"].rsplit(":", 1)[1])
    moved = dict(a, upstream="127.0.0.1:9")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for entries in ([moved, {"name": "b", "listen": busy, "upstream": "127.0.0.1:9"}],
                        [dict(moved, listen=busy)]):
            code, body = api_call(api, "POST", "/populate", entries)
            assert code == 500 and busy in body["error"], body
            code, proxies = api_call(api, "GET", "/proxies")
            assert code == 200 and list(proxies) == ["a"], proxies
            assert proxies["a"]["upstream"] == a["upstream"] and proxies["a"]["listen"] == a["listen"]
            assert [t["type"] for t in proxies["a"]["toxics"]] == ["latency"], proxies
            with connect(port) as client:
                client.sendall(b"again")
                assert recv_exact(client, 5) == b"again"
    # "a" moves to another port and "b" takes its old one, in one list.
    code, body = api_call(api, "POST", "/populate",
                          [dict(a, listen="127.0.0.1:0"),
                           {"name": "b", "listen": a["listen"], "upstream": a["upstream"]}])
    assert code == 201 and [p["name"] for p in body["proxies"]] == ["a", "b"], body
    with connect(port) as client:
        client.sendall(b"via b")
        assert recv_exact(client, 5) == b"via b"


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1) on this machine")
@pytest.mark.parametrize("listen", ["[::]:0", ":0"])
def test_regression_a_proxy_on_every_interface_serves_ipv4_clients_too(tcpkit_process, listen):
    # toxiproxy (Go) listens on "[::]:PORT" and ":PORT" for IPv4 and IPv6
    # alike; the relay's "[::]" served IPv6 only, so a config written for
    # toxiproxy refused 127.0.0.1, and ":PORT" was refused as malformed.
    relay, api = start_chaos(tcpkit_process)
    proxy = echo_proxy(tcpkit_process, api, "all", listen)
    port = int(proxy["listen"].rsplit(":", 1)[1])
    for host in ("127.0.0.1", "::1"):
        with socket.create_connection((host, port), timeout=scaled(5)) as client:
            client.sendall(host.encode())
            assert recv_exact(client, len(host)) == host.encode()


def test_regression_a_toxic_update_that_is_not_an_object_is_refused(tcpkit_process):
    # An update whose body was not a JSON object ([1, 2]) was taken for an
    # empty one: 200, and nothing changed. toxiproxy answers 400.
    relay, api = start_chaos(tcpkit_process)
    with proxy_with_toxic(api, "p", {"type": "latency", "attributes": {"latency": 5}}):
        for verb in ("POST", "PATCH"):
            for body in ([1, 2], "latency", 7):
                code, reply = api_call(api, verb, "/proxies/p/toxics/latency_downstream", body)
                assert code == 400 and reply["error"] == "bad request body", (verb, body, reply)
        code, toxic = api_call(api, "GET", "/proxies/p/toxics/latency_downstream")
        assert code == 200 and toxic["attributes"]["latency"] == 5, toxic


def test_regression_populate_names_its_limit(tcpkit_process):
    # A list of more than 1000 proxies was answered "bad request body", as
    # if it were not JSON.
    relay, api = start_chaos(tcpkit_process)
    entry = {"name": "x", "upstream": "127.0.0.1:9"}
    for body in ([entry] * 1001, {"proxies": [entry] * 1001}):
        code, reply = api_call(api, "POST", "/populate", body)
        assert code == 400 and reply["error"] == "more than 1000 proxies in one request", reply
    assert api_call(api, "GET", "/proxies") == (200, {})


def test_regression_config_file_errors_name_the_file_and_are_usage_errors(tcpkit, tmp_path):
    # A bad entry of --config printed the API's text ("missing required
    # field: upstream at proxy 1") without naming the file, and exited 1 as
    # for a failure of the machine; so did a file that is not a JSON list.
    config = tmp_path / "proxies.json"
    good = {"name": "x", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}
    cases = [([{"name": "x"}], "missing required field: upstream at proxy 1"),
             ([1], "bad request body at proxy 1"),
             ([good, good], 'duplicate proxy name "x"'),
             ({"name": "x"}, "not a JSON list of proxies")]
    for content, message in cases:
        config.write_text(json.dumps(content))
        done = tcpkit("relay", "--config", config, timeout=5)
        assert done.returncode == 2, (content, done.returncode, done.stderr)
        assert f"tcpkit relay: --config {config}: {message}" in done.stderr, done.stderr
    missing = tmp_path / "missing.json"
    done = tcpkit("relay", "--config", missing, timeout=5)
    assert done.returncode == 2 and str(missing) in done.stderr, done.stderr


def test_regression_a_config_proxy_named_relay_clashes_with_listen_and_to(tcpkit, tmp_path):
    # --listen/--to make the proxy "relay"; a --config entry of that name
    # silently replaced it.
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "relay", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]))
    done = tcpkit("relay", "--config", config, "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9",
                  timeout=5)
    assert done.returncode == 2, done.stderr
    assert f"tcpkit relay: --config {config}: proxy 1 is named \"relay\"" in done.stderr, done.stderr
    assert "--listen/--to" in done.stderr, done.stderr


def test_disable_and_delete_close_live_connections_on_io_threads(tcpkit_process):
    relay, api = start_chaos(tcpkit_process, "--threads", "2")
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(4)
        up = upstream.getsockname()[1]
        code, proxy = api_call(api, "POST", "/proxies", {"name": "p", "upstream": f"127.0.0.1:{up}"})
        assert code == 201
        port = int(proxy["listen"].rsplit(":", 1)[1])
        code, _ = api_call(api, "POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": 1}})
        assert code == 200
        for action in ("disable", "delete"):
            client, server = through(port, upstream, b"x")
            with client, server:
                if action == "disable":
                    code, body = api_call(api, "POST", "/proxies/p", {"enabled": False})
                    assert code == 200 and body["enabled"] is False
                else:
                    code, _ = api_call(api, "DELETE", "/proxies/p")
                    assert code == 204
                got, _ = recv_until_eof(client)
                assert got == b"", "the relay kept a connection of a disabled or deleted proxy"
            # The log says why (it said "client: timed out", the drain
            # deadline's close, before).
            reason = "disabled" if action == "disable" else "deleted"
            relay.wait_for_line(rf"disconnect 127\.0\.0\.1:\d+: proxy {reason} ", stream="stdout")
            with pytest.raises(ConnectionRefusedError):
                connect(port).close()
            if action == "disable":
                code, body = api_call(api, "POST", "/proxies/p", {"enabled": True})
                assert code == 200 and body["listen"] == proxy["listen"]
        code, body = api_call(api, "GET", "/proxies/p")
        assert code == 404 and body == {"error": "proxy not found", "status": 404}


def test_usage_errors_name_the_missing_flags(tcpkit):
    done = tcpkit("relay")
    assert done.returncode == 2 and "give --listen and --to, or --api / --config" in done.stderr
    done = tcpkit("relay", "--api", "127.0.0.1:0", "--listen", "127.0.0.1:0")
    assert done.returncode == 2 and "give both --listen and --to" in done.stderr


def test_regression_proxies_deleted_while_pairs_finish_on_io_threads(tcpkit_process):
    """A pair finishing on an I/O thread used to touch its proxy's app after
    the API had deleted it (a crash under load). Bounded churn of create,
    connect, disable/enable, delete; the relay must answer at the end."""
    relay, api = start_chaos(tcpkit_process, "--threads", "2")
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(16)
        up = upstream.getsockname()[1]
        for i in range(100):
            code, proxy = api_call(api, "POST", "/proxies", {"name": "p", "upstream": f"127.0.0.1:{up}"})
            assert code == 201, proxy
            client, server = through(int(proxy["listen"].rsplit(":", 1)[1]), upstream, b"x")
            with client, server:
                if i % 2:
                    assert api_call(api, "POST", "/proxies/p", {"enabled": False})[0] == 200
                    assert api_call(api, "POST", "/proxies/p", {"enabled": True})[0] == 200
                assert api_call(api, "DELETE", "/proxies/p")[0] == 204
                recv_until_eof(client)
    assert api_call(api, "GET", "/proxies") == (200, {})
    assert relay.returncode is None


@pytest.mark.skipif(not strace_works(),
                    reason="counting name lookups needs strace, and ptrace allowed")
def test_regression_populate_looks_each_name_up_once(tcpkit_process, tmp_path):
    # /populate resolved every enabled proxy's addresses to check the whole
    # list, then again to start each proxy: twice the lookups, and a name
    # whose answer changed in between started on an address never checked.
    # Each lookup of a name reads /etc/hosts once.
    trace = tmp_path / "trace"
    # LeakSanitizer stops the process's threads with ptrace at exit, which
    # it cannot do under strace: the leak check is off for this one run.
    asan_options = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    relay = tcpkit_process(argv=["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace),
                                 str(tcpkit_path()), "relay", "--api", "127.0.0.1:0"],
                           env=dict(os.environ, ASAN_OPTIONS=asan_options))
    api = relay.wait_for_line(API_RE, stream="stdout").group("address")
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        proxy = {"name": "a", "listen": "localhost:0",
                 "upstream": f"localhost:{upstream.getsockname()[1]}"}
        code, body = api_call(api, "POST", "/populate", [proxy])
        assert code == 201, body
    # The relay is strace's child: stopping it lets strace finish the trace.
    child = subprocess.run(["pgrep", "-P", str(relay.proc.pid)], capture_output=True, text=True)
    os.kill(int(child.stdout.split()[0]), signal.SIGTERM)
    assert relay.proc.wait(timeout=scaled(DEFAULT_TIMEOUT)) == 0
    lookups = trace.read_text().count('"/etc/hosts"')
    assert lookups == 2, f"/etc/hosts was read {lookups} times for two names"

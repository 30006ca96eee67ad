"""The black-box helpers themselves (conftest.py), where a race in them
would make tests of tcpkit fail at random."""

from __future__ import annotations

import sys

from conftest import TcpkitProcess

# A line on stdout, then, a moment later, one on stderr: the stdout line is
# in the queue first, so a wait for the stderr line reads it on the way.
STDOUT_THEN_STDERR = """
import sys, time
print("listening on 127.0.0.1:1", flush=True)
time.sleep(0.2)
print("fell back to epoll", file=sys.stderr, flush=True)
time.sleep(30)
"""


def test_regression_a_wait_on_one_stream_keeps_the_other_streams_lines():
    # tcpkit serve prints its fallback on stderr and "listening" on stdout;
    # the two reader threads may queue them in either order. A wait for the
    # stderr line used to consume the stdout line, and the wait for it then
    # ran into its timeout (seen once in CI, test_io_backend).
    with TcpkitProcess(argv=[sys.executable, "-c", STDOUT_THEN_STDERR]) as p:
        assert p.wait_for_line(r"fell back", stream="stderr", timeout=10)
        match = p.wait_for_line(r"listening on .*:(?P<port>\d+)", stream="stdout", timeout=2)
        assert match.group("port") == "1"
        # Kept once only: a second wait does not find it again.
        try:
            p.wait_for_line(r"listening", stream="stdout", timeout=0.5)
        except AssertionError:
            pass
        else:
            raise AssertionError("the same line was matched twice")

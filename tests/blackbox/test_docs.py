"""Runs the console sessions in the documentation and checks that the program
still prints what the documents show.

Documents checked: docs/tutorial.md, docs/tutorial.zh-Hant.md and README.md.
Only fenced blocks marked ```console are run (```sh, ```text and others are
not). Inside a console block:

  $ CMD            a command, run with bash in a fresh temporary directory;
                   the lines up to the next "$ " line are its expected output
                   (stdout and stderr together, in order). A line ending in
                   " \\" continues on the next line.
  $ CMD &          starts CMD in the background as a job (%1, %2, ... in
                   start order). The lines under it are the first lines the
                   job must print; the test waits for them (this is also how
                   it knows that a server is ready). A job shown without
                   output is waited for until it listens or has a connection
                   established.
  $ wait           waits until every job has exited by itself; the lines
                   under it are what the jobs printed since last checked
                   (job %1's lines first, then %2's, ...).
  $ kill %N        kill -TERM; "kill -INT %N" (what Ctrl-C sends) and other
                   signal names work too: signals job N, waits for it to
                   exit, and checks what it printed since last checked.
                   Before the signal, connections on the block's ports get
                   up to 5 s to finish closing, so that a server has logged
                   its clients' departures, as it would have by the time a
                   person types the command.

Jobs still running at the end of the block are stopped and not checked.

In expected output, "..." matches any text within a line, a line that is
just "..." matches any number of lines (also none), and a placeholder such
as <PORT>, <PID> or <TIME> matches one run of non-blank characters.

Ports 9100-9199 that a block mentions are checked to be free first (no socket
on them in any state, TIME_WAIT included). One that is not free, e.g. because
the same block ran a minute ago, is replaced throughout the block (commands
and expected output alike) with a free port outside the kernel's ephemeral
range, so the session still runs as written.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import SANITIZER, scaled, source_dir, tcpkit_path

DOCUMENTS = ["docs/tutorial.md", "docs/tutorial.zh-Hant.md", "README.md"]
REQUIRED = {"docs/tutorial.md", "docs/tutorial.zh-Hant.md"}
COMMAND_TIMEOUT = scaled(30.0)
JOB_TIMEOUT = scaled(15.0)
LIVE_STATE_WAIT = scaled(3.0)  # seconds a `tcpkit port` may take to show a closed connection gone
DOC_PORTS = range(9100, 9200)


def build_dir() -> Path:
    env = os.environ.get("TCPKIT_BUILD_DIR")
    return Path(env) if env else tcpkit_path().parent


# --- parsing ----------------------------------------------------------------------------------

@dataclass
class Step:
    command: str
    line: int
    expected: list[str] = field(default_factory=list)

    @property
    def background(self) -> bool:
        return self.command.rstrip().endswith("&") and not self.command.rstrip().endswith("&&")


@dataclass
class Block:
    document: str
    line: int
    steps: list[Step]

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


FENCE_RE = re.compile(r"^(\s*)(```+|~~~+)\s*(\S*)")


def parse_blocks(document: str, text: str) -> list[Block]:
    """Every ```console block of a Markdown text, as steps."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE_RE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info, start = len(match.group(1)), match.group(2), match.group(3), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            # A block inside a list item is indented; its lines lose that indent.
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line)
            i += 1
        i += 1  # the closing fence
        if info == "console":
            blocks.append(Block(document, start, parse_steps(document, start, body)))
    return blocks


def parse_steps(document: str, first_line: int, body: list[str]) -> list[Step]:
    steps: list[Step] = []
    continuing = False
    for offset, raw in enumerate(body, start=1):
        line = raw.rstrip()
        if continuing:
            steps[-1].command += "\n" + line
            continuing = line.endswith("\\")
            continue
        if line.startswith("$ "):
            steps.append(Step(line[2:], first_line + offset))
            continuing = line.endswith("\\")
        elif line == "$":
            raise AssertionError(f"{document}:{first_line + offset}: empty command")
        else:
            if not steps:
                raise AssertionError(f"{document}:{first_line + offset}: output before the first command "
                                     f"in a console block: {line!r}")
            steps[-1].expected.append(line)
    if not steps:
        raise AssertionError(f"{document}:{first_line}: a console block without a command")
    return steps


def all_blocks() -> list[Block]:
    blocks: list[Block] = []
    for document in DOCUMENTS:
        path = source_dir() / document
        if path.is_file():
            blocks.extend(parse_blocks(document, path.read_text(encoding="utf-8")))
    return blocks


# --- matching ---------------------------------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z_]*>")


def line_regex(expected: str) -> re.Pattern:
    parts = re.split(r"(\.\.\.|<[A-Z][A-Z_]*>)", expected)
    pattern = ""
    for part in parts:
        if part == "...":
            pattern += ".*"
        elif PLACEHOLDER_RE.fullmatch(part):
            pattern += r"\S+"
        else:
            pattern += re.escape(part)
    return re.compile(pattern)


def lines_match(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` fits `expected` line by line (see the module doc)."""
    expected = [line.rstrip() for line in expected]
    actual = [line.rstrip() for line in actual]
    memo: dict[tuple[int, int], bool] = {}

    def fits(e: int, a: int) -> bool:
        if (e, a) in memo:
            return memo[(e, a)]
        if e == len(expected):
            result = a == len(actual)
        elif expected[e] == "...":
            result = fits(e + 1, a) or (a < len(actual) and fits(e, a + 1))
        else:
            result = a < len(actual) and bool(line_regex(expected[e]).fullmatch(actual[a])) and fits(e + 1, a + 1)
        memo[(e, a)] = result
        return result

    return fits(0, 0)


def mismatch(step: Step, expected: list[str], actual: list[str], what: str = "printed") -> str:
    return (f"line {step.line}: $ {step.command}\n--- the document shows ---\n" + "\n".join(expected) +
            f"\n--- the program {what} ---\n" + "\n".join(actual))


# --- ports ------------------------------------------------------------------------------------

def sockets_on(port: int) -> int:
    """Sockets in any state with `port` at either end, from /proc/net/tcp*."""
    count = 0
    for fields in tcp_rows():
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if port in (local, remote):
            count += 1
    return count


def tcp_rows() -> list[list[str]]:
    rows: list[list[str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows += [row.split() for row in Path(table).read_text().splitlines()[1:]]
        except OSError:
            pass
    return rows


def busy_connections(ports: set[int]) -> int:
    """Connections on `ports` still open or half-open (not yet closed by both ends)."""
    count = 0
    for fields in tcp_rows():
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if fields[3] in ("01", "02", "03", "08") and (local in ports or remote in ports):
            count += 1
    return count


def session_sockets(session: int) -> set[str]:
    """Socket inodes held by the processes of one session (a job and its children)."""
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) != session:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def job_is_on_the_network(job: "Job") -> bool:
    """Whether the job listens or has a connection established."""
    inodes = session_sockets(job.proc.pid)
    return any(fields[9] in inodes and fields[3] in ("01", "0A") for fields in tcp_rows())


def settle(ports: set[int], timeout: float = 5.0) -> None:
    """Gives connections on the block's ports a moment to finish closing, so a
    server's last log lines come before the signal that stops it. Not an error
    when some stay open: the comparison that follows will tell."""
    deadline = time.monotonic() + timeout
    while busy_connections(ports) and time.monotonic() < deadline:
        time.sleep(0.02)


def ephemeral_range() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def port_map(block: Block) -> dict[str, str]:
    """Each documentation port the block uses, mapped to itself when it is free
    and otherwise to a free replacement of as many digits outside the
    ephemeral range (the copy of this file that runs on io_uring uses the
    same ports at the same time)."""
    wanted = sorted({int(p) for step in block.steps for p in re.findall(r"\b(9[01]\d\d)\b", step.command)
                     if int(p) in DOC_PORTS})
    ephemeral = ephemeral_range()
    mapping: dict[str, str] = {}
    taken: set[int] = set()
    for port in wanted:
        chosen = port
        if sockets_on(port):
            # As many digits as the original: the program pads its address
            # columns, so a longer port would shift the expected text.
            digits = len(str(port))
            candidates = [p for p in range(max(1024, 10 ** (digits - 1)), 10 ** digits)
                          if p not in ephemeral and p not in taken and p not in DOC_PORTS]
            random.shuffle(candidates)
            chosen = next((p for p in candidates if sockets_on(p) == 0), None)
            assert chosen is not None, f"no free port to stand in for {port}"
        taken.add(chosen)
        mapping[str(port)] = str(chosen)
    return mapping


def substitute(text: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return text


# --- running ----------------------------------------------------------------------------------

class Job:
    """A background command; its output (stdout+stderr) is read line by line."""

    def __init__(self, command: str, cwd: Path, env: dict):
        self.command = command
        self.lines: list[str] = []
        self.seen = 0  # lines already compared with the document
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of output
            self.cond.notify_all()

    def wait_for_lines(self, count: int, timeout: float) -> list[str]:
        """The next `count` unseen lines (fewer if the job ends first or time runs out)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                fresh = self.lines[self.seen:]
                done = None in fresh
                fresh = [line for line in fresh if line is not None]
                if len(fresh) >= count or done:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            taken = fresh[:count]
            self.seen += len(taken)
            return taken

    def wait_exit(self, timeout: float) -> list[str]:
        """Waits for the process and its output to end; returns the unseen lines."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout)
        with self.cond:
            rest = [line for line in self.lines[self.seen:] if line is not None]
            self.seen = len(self.lines)
            return rest

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.reader.join(5)


KILL_RE = re.compile(r"^kill(?:\s+-(?:s\s+)?(\w+))?\s+%(\d+)$")
WAIT_RE = re.compile(r"^wait(?:\s+%(\d+))?$")


def session_env() -> dict:
    env = dict(os.environ)
    build = build_dir()
    env["PATH"] = os.pathsep.join([str(tcpkit_path().parent), str(build), str(build / "examples"), env["PATH"]])
    env.setdefault("LANG", "C.UTF-8")
    return env


def signal_number(name: Optional[str]) -> int:
    if name is None:
        return signal.SIGTERM
    if name.isdigit():
        return int(name)
    name = name.upper()
    return getattr(signal, name if name.startswith("SIG") else "SIG" + name)


def run_block(block: Block, cwd: Path) -> None:
    mapping = port_map(block)
    ports = {int(p) for p in mapping.values()}
    env = session_env()
    jobs: list[Job] = []
    try:
        for step in block.steps:
            command = substitute(step.command, mapping)
            expected = [substitute(line, mapping) for line in step.expected]
            run_step(step, command, expected, jobs, ports, cwd, env)
    finally:
        for job in jobs:
            job.stop()


def job_at(jobs: list[Job], number: str, step: Step) -> Job:
    index = int(number) - 1
    assert 0 <= index < len(jobs), f"line {step.line}: there is no job %{number}"
    return jobs[index]


def run_step(step: Step, command: str, expected: list[str], jobs: list[Job], ports: set[int], cwd: Path,
             env: dict) -> None:
    stripped = command.strip()
    if step.background:
        job = Job(stripped[:-1].rstrip(), cwd, env)
        jobs.append(job)
        need = sum(1 for line in expected if line.strip() != "...")
        if need == 0:
            # Nothing to wait for on screen: wait until it listens or is connected.
            try:
                wait_until_ready(job)
            except TimeoutError as e:
                raise AssertionError(f"line {step.line}: $ {step.command}: {e}\n" +
                                     "\n".join(job.wait_for_lines(1000, 0))) from None
            got = job.wait_for_lines(0, 0)
        else:
            got = job.wait_for_lines(need, JOB_TIMEOUT)
        assert lines_match(expected, got), mismatch(step, expected, got, "printed first")
        return
    if kill := KILL_RE.match(stripped):
        job = job_at(jobs, kill.group(2), step)
        settle(ports)
        if job.proc.poll() is None:
            job.proc.send_signal(signal_number(kill.group(1)))
        got = job.wait_exit(JOB_TIMEOUT)
        assert lines_match(expected, got), mismatch(step, expected, got)
        return
    if wait := WAIT_RE.match(stripped):
        chosen = [job_at(jobs, wait.group(1), step)] if wait.group(1) else jobs
        got = []
        for job in chosen:
            got += job.wait_exit(JOB_TIMEOUT)
        assert lines_match(expected, got), mismatch(step, expected, got)
        return
    # `tcpkit port` shows the kernel's sockets as they are: a connection that
    # the previous command's client just ended may still be closing on the
    # server's side. A user who types the next command gives it that moment;
    # here the command runs again for up to LIVE_STATE_WAIT seconds. So does
    # a pipe into `tcpkit connect`: which notice follows a server's FIN
    # depends on whether the writer of the pipe (printf) had closed it by
    # then, which a loaded machine may delay past the server's answer.
    timing = stripped.startswith("tcpkit port") or "| tcpkit connect" in stripped
    deadline = time.monotonic() + (LIVE_STATE_WAIT if timing else 0)
    while True:
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)
        got = result.stdout.decode("utf-8", "backslashreplace").splitlines()
        if lines_match(expected, got) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert lines_match(expected, got), mismatch(step, expected, got) + f"\n(exit status {result.returncode})"


def wait_until_ready(job: Job, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not job_is_on_the_network(job):
        if job.proc.poll() is not None:
            raise TimeoutError("the job exited before it listened or connected")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the job neither listened nor connected within {timeout} s")
        time.sleep(0.02)


# --- tests ------------------------------------------------------------------------------------

BLOCKS = all_blocks()


def test_the_tutorials_exist_and_have_sessions():
    documents = {block.document for block in BLOCKS}
    assert REQUIRED <= documents, f"no console blocks found in {REQUIRED - documents}"
    for document in REQUIRED:
        steps = [s for b in BLOCKS if b.document == document for s in b.steps]
        assert len(steps) >= 20, f"{document} has only {len(steps)} commands"


def test_both_tutorials_run_the_same_commands():
    # The Chinese tutorial is a translation: the sessions must stay the same.
    def commands(document: str) -> list[str]:
        return [s.command for b in BLOCKS if b.document == document for s in b.steps]
    assert commands("docs/tutorial.md") == commands("docs/tutorial.zh-Hant.md")


def test_every_documented_program_is_built():
    env = session_env()
    names = {re.split(r"\s", s.command.strip())[0] for b in BLOCKS for s in b.steps}
    for name in sorted(names & {"tcpkit", "tcp_client", "tcp_server", "server_loop", "server_threads",
                                "chat_server", "line_protocol_server", "reconnecting_client"}):
        found = subprocess.run(["bash", "-c", f"type -P {name}"], env=env, capture_output=True, text=True)
        assert found.returncode == 0, f"{name} is not on the documents' PATH ({env['PATH']})"


def test_matcher_understands_the_placeholders():
    assert lines_match(["listening on 127.0.0.1:<PORT>"], ["listening on 127.0.0.1:40123"])
    assert not lines_match(["listening on 127.0.0.1:<PORT>"], ["listening on 127.0.0.1:4 0"])
    assert lines_match(["... listening on x"], ["2024-01-01T00:00:00.000 listening on x"])
    assert lines_match(["a", "...", "z"], ["a", "z"])
    assert lines_match(["a", "...", "z"], ["a", "b", "c", "z"])
    assert not lines_match(["a", "z"], ["a", "b", "z"])
    assert not lines_match(["a"], ["a", "extra"])
    assert not lines_match(["exact (text)"], ["exact [text]"])


def test_parser_reads_commands_jobs_and_output():
    text = "x\n```console\n$ a &\nready\n$ b \\\n  --flag\nout\n$ kill -INT %1\n```\n```sh\n$ not run\n```\n"
    (block,) = parse_blocks("t.md", text)
    assert [s.command for s in block.steps] == ["a &", "b \\\n  --flag", "kill -INT %1"]
    assert block.steps[0].background and not block.steps[1].background
    assert block.steps[0].expected == ["ready"] and block.steps[1].expected == ["out"]


def depends_on_timing(block: Block) -> Optional[str]:
    """Why the outcome of a session depends on how fast the programs run
    (None when it does not). A sanitizer's slowdown can change it, so the
    sanitizer builds skip these; the plain build runs them."""
    expected = [line for step in block.steps for line in step.expected]
    commands = [step.command for step in block.steps]
    if any(line.startswith("OSError: [Errno 98]") for line in expected):
        # The tutorials' TIME_WAIT session: the bind fails only if the end on
        # the server's port holds the TIME_WAIT, i.e. tcp_server closed before
        # tcp_client; nothing makes the client wait for that.
        return "the TIME_WAIT is on the server's end only if tcp_server closes before tcp_client"
    if any(line.startswith("tcpkit connect: no reply") for line in expected) and \
            any(command.startswith("sleep ") for command in commands):
        # The one-client-at-a-time session: a first client holds server_loop
        # for `sleep 3`; the second must start within those 3 s to be kept
        # waiting.
        return "the second client must start before the first one's `sleep` ends"
    return None


def time_wait_table_full() -> Optional[str]:
    """Why the kernel may keep no new TIME_WAIT (None when it will): once
    tcp_max_tw_buckets connections wait, it drops new ones at once (a
    benchmark that just made hundreds of thousands of connections fills it
    for a minute)."""
    try:
        limit = int(Path("/proc/sys/net/ipv4/tcp_max_tw_buckets").read_text())
        waiting = 0
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == "TCP:" and "tw" in fields:
                waiting = int(fields[fields.index("tw") + 1])
    except (OSError, ValueError):
        return None
    if waiting >= limit * 0.9:
        return f"{waiting} of the kernel's {limit} TIME_WAIT slots are taken"
    return None


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_console_block(block, tcpkit_bin):
    if SANITIZER and (why := depends_on_timing(block)):
        pytest.skip(f"timing-dependent session under a sanitizer: {why}")
    shows_time_wait = any("TIME_WAIT" in line for step in block.steps for line in step.expected)
    if shows_time_wait and (why := time_wait_table_full()):
        pytest.skip(f"a session that shows TIME_WAIT, while the kernel keeps no new one: {why}")
    with tempfile.TemporaryDirectory(prefix="tcpkit-docs-") as cwd:
        run_block(block, Path(cwd))

"""bench/run-all's report checks, without measuring anything: the check that
keeps figures out of the hand-written notes (or makes them match the tables),
the parsing of `strace -c` summaries, and medians that are measured values.

The numbers in docs/benchmarks.md must all come from the generator: a number
in the hand-written part (bench/benchmarks-notes.md, copied between markers)
that no generated table holds fails `bench/run-all`, and `bench/run-all
--check FILE` checks a written document.
"""

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("TCPKIT_SOURCE_DIR", Path(__file__).resolve().parents[2]))
RUN_ALL = SOURCE / "bench" / "run-all"


@pytest.fixture(scope="module")
def gen():
    loader = importlib.machinery.SourceFileLoader("bench_run_all", str(RUN_ALL))
    spec = importlib.util.spec_from_loader("bench_run_all", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def document(gen, tables, hand):
    return f"# Benchmarks\n\n{tables}\n\n{gen.NOTES_BEGIN}\n\n{hand}\n\n{gen.NOTES_END}\n\n## Notes\n"


TABLES = """| server | msgs/s | server CPU µs/msg |
|---|---:|---:|
| **tcpkit (uring)** | 113,737 | 8.76 |
| epoll (C) | 111,969 | 8.75 |

* **tcpkit (uring)** used 1.00× the server CPU per message of the bare epoll server at 100 × 16 B.
"""


def test_numbers_that_the_tables_hold_pass(gen):
    hand = "At 100 × 16 B tcpkit spent 8.76 µs per message against 8.75, and reached 113,737 messages/s."
    assert gen.check_document(document(gen, TABLES, hand)) == []


def test_a_number_that_no_table_holds_is_reported(gen):
    hand = "tcpkit spent 12.9 against 10.9 µs at 100 × 16 B, 5–35% more."
    assert gen.check_document(document(gen, TABLES, hand)) == ["12.9", "10.9", "5", "35"]


def test_thousands_separators_and_trailing_zeros_do_not_matter(gen):
    hand = "113737 messages/s, 8.760 µs"
    assert gen.check_document(document(gen, TABLES, hand)) == []


def test_code_comments_and_link_targets_are_not_figures(gen):
    hand = ("Run `tcpkit bench --conns 50 --size 4096` or\n\n```\nbench/scale.sh 16\n```\n\n"
            "see [the guide](https://example.com/v2/3) <!-- 42 -->; x86_64, io_uring, IPv6 and C++20 "
            "carry no figure.")
    assert gen.check_document(document(gen, TABLES, hand)) == []


def test_numbers_in_the_generated_part_are_not_checked(gen):
    assert gen.check_document(document(gen, TABLES + "\n0.43 KiB\n", "No figures here.")) == []


def test_the_committed_notes_hold_no_figures(gen):
    notes = (SOURCE / "bench" / "benchmarks-notes.md").read_text()
    assert gen.numbers_in(gen.strip_unchecked(notes)) == []


def test_check_option(gen, tmp_path):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(document(gen, TABLES, "8.76 against 8.75 µs"))
    bad.write_text(document(gen, TABLES, "second lowest at 51.9 µs"))
    assert subprocess.run([sys.executable, str(RUN_ALL), "--check", str(good)], timeout=60).returncode == 0
    out = subprocess.run([sys.executable, str(RUN_ALL), "--check", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "51.9" in out.stdout


def test_strace_summary(gen):
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 55.10    0.120000           2     50000           read
 40.00    0.090000           1     50000           sendto
  4.90    0.010000           1      6000       120 epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.220000           2    106000       120 total
"""
    assert gen.parse_strace_summary(text) == {"read": 50000, "sendto": 50000, "epoll_wait": 6000}


def test_the_median_is_a_measured_run(gen):
    runs = [{"msgs_per_s": 3.0}, None, {"msgs_per_s": 1.0}, {"msgs_per_s": 2.0}]
    assert gen.median_run(runs)["msgs_per_s"] == 2.0
    assert gen.median_value([{"x": 5}, {"x": 1}, {"x": 9}], "x") == 5
    assert gen.REPEAT % 2 == 1


def test_targets_name_the_worst_cell(gen):
    row = gen.target_row("t", "tcpkit (epoll)", [("a", 0.9, []), ("b", 0.97, [0.9, 0.97, 1.01])], 0.95, True)
    assert row[2] == "0.90×" and row[3] == "**missed**" and "worst: a" in row[4]
    row = gen.target_row("t", "tcpkit (epoll)", [("a", 0.93, [0.91, 0.93, 0.96])], 0.92, False)
    assert row[3] == "**missed**" and "within this machine's noise" in row[4]
    row = gen.target_row("t", "tcpkit (epoll)", [("a", 0.5, []), ("b", 0.8, [])], 1.0, False)
    assert row[2] == "0.80×" and row[3] == "**met**"


def test_a_missed_cpu_target_says_which_part_of_the_cpu_differs(gen):
    race = gen.Race("msgs_per_s")
    # tcpkit: 10 µs per message, 20% of it in its own code; the reference:
    # 8 µs, 10% of it. Its own code +1.2 µs, the kernel +0.8 µs.
    race.runs[("tcpkit (uring)", 100, 16)] = [
        {"cpu_us_per_msg": 10.0, "server_user_ticks": 8, "server_sys_ticks": 32}, None,
        {"cpu_us_per_msg": 10.0, "server_user_ticks": 2, "server_sys_ticks": 8}]
    race.runs[("epoll (C)", 100, 16)] = [
        {"cpu_us_per_msg": 8.0, "server_user_ticks": 4, "server_sys_ticks": 36}]
    assert gen.cpu_split(race, "tcpkit (uring)", (100, 16)) == (pytest.approx(2.0), pytest.approx(8.0), 1)
    reason = gen.split_reason(race, "tcpkit (uring)", "epoll (C)", (100, 16))
    assert "2.00 µs per message in its own code and 8.00 in the kernel" in reason
    assert "epoll (C) 0.80 and 7.20" in reason
    assert "its own code +1.20 µs, the kernel +0.80 µs" in reason and "is tcpkit's own code" in reason
    race.runs[("epoll (C)", 100, 16)] = [
        {"cpu_us_per_msg": 8.0, "server_user_ticks": 10, "server_sys_ticks": 30}]
    assert "is the kernel's work" in gen.split_reason(race, "tcpkit (uring)", "epoll (C)", (100, 16))
    # Too few ticks to tell: no reason rather than a made-up one.
    race.runs[("epoll (C)", 1, 16)] = [{"cpu_us_per_msg": 8.0, "server_user_ticks": 1, "server_sys_ticks": 9}]
    race.runs[("tcpkit (uring)", 1, 16)] = race.runs[("tcpkit (uring)", 100, 16)]
    assert gen.cpu_split(race, "epoll (C)", (1, 16)) is None
    assert gen.split_reason(race, "tcpkit (uring)", "epoll (C)", (1, 16)) == ""
    # ... unless the cells where the target is missed hold enough between
    # them: their ticks split the worst cell's CPU, and the reason says so.
    # epoll (C): 11 user of 50 ticks over both cells, 22% of 8 µs: 1.76 and 6.24.
    assert gen.cpu_split(race, "epoll (C)", (1, 16), pool=[(1, 16), (100, 16)]) == (
        pytest.approx(1.76), pytest.approx(6.24), 2)
    reason = gen.split_reason(race, "tcpkit (uring)", "epoll (C)", (1, 16), pool=[(1, 16), (100, 16)])
    assert "epoll (C) 1.76 and 6.24" in reason and "of the 2 cells where it is missed" in reason
    assert gen.split_reason(race, "tcpkit (uring)", "epoll (C)", (1, 16), pool=[(1, 16)]) == ""
    assert gen.split_reason(race, "tcpkit (uring)", None, None) == ""
    # The reason goes with a missed target only.
    assert "why: k" in gen.target_row("t", "s", [("a", 1.0, [])], 0.92, False, reason="; why: k")[4]
    assert "why: k" not in gen.target_row("t", "s", [("a", 0.9, [])], 0.92, False, reason="; why: k")[4]


def test_a_profile_splits_the_cpu_where_there_is_one(gen, monkeypatch):
    race = gen.Race("cpu_us_per_msg")
    # utime/stime would say: tcpkit 2.00 of its 10 µs in its own code, epoll (C) 0.80 of 8.
    race.runs[("tcpkit (epoll)", 100, 16)] = [{"cpu_us_per_msg": 10.0, "server_user_ticks": 8,
                                               "server_sys_ticks": 32}]
    race.runs[("epoll (C)", 100, 16)] = [{"cpu_us_per_msg": 8.0, "server_user_ticks": 4, "server_sys_ticks": 36}]
    monkeypatch.setattr(gen, "PROFILES", {})
    fallback = gen.split_reason(race, "tcpkit (epoll)", "epoll (C)", (100, 16), profile="fixed")
    assert "(utime/stime over the repetitions, no profile)" in fallback and "2.00 µs per message" in fallback
    # The profiles: 5% of tcpkit's samples and 2.5% of the reference's in user space.
    gen.PROFILES[("tcpkit (epoll)", "fixed", (100, 16))] = {"user": 50, "kernel": 950}
    gen.PROFILES[("epoll (C)", "fixed", (100, 16))] = {"user": 25, "kernel": 975}
    reason = gen.split_reason(race, "tcpkit (epoll)", "epoll (C)", (100, 16), profile="fixed")
    assert "a profile of both servers at 100 × 16 B" in reason and "1,000 and 1,000 samples" in reason
    assert "0.50 µs per message of tcpkit's in user space" in reason and "and 9.50 in the kernel" in reason
    assert "epoll (C)'s 0.20 and 7.80" in reason
    assert "user space +0.30 µs, the kernel +1.70 µs" in reason and "is the kernel's work" in reason
    # A profile of another kind of load does not count, nor one of too few samples.
    assert "no profile" in gen.split_reason(race, "tcpkit (epoll)", "epoll (C)", (100, 16), profile="closed")
    gen.PROFILES[("epoll (C)", "fixed", (100, 16))] = {"user": 5, "kernel": gen.PROFILE_MIN_SAMPLES - 10}
    assert "no profile" in gen.split_reason(race, "tcpkit (epoll)", "epoll (C)", (100, 16), profile="fixed")


def test_perf_samples_splits_user_space_from_the_kernel(gen, monkeypatch):
    report = ("         18644  [kernel.kallsyms]   \n             1  [vdso]              \n"
              "           404  libc.so.6           \n           728  tcpkit              \n\n")
    monkeypatch.setattr(gen, "run", lambda argv, timeout: (0, report, ""))
    assert gen.perf_samples("x.data") == {"user": 1133, "kernel": 18644}
    monkeypatch.setattr(gen, "run", lambda argv, timeout: (1, "", "failed to open x.data"))
    assert gen.perf_samples("x.data") is None


def test_a_trailing_client_is_explained_by_its_profile_where_there_is_one(gen, monkeypatch):
    race = gen.Race("msgs_per_s")
    run = lambda rate, cpu: {"msgs_per_s": rate, "client_cpu_us_per_msg": cpu,  # noqa: E731
                             "client_user_us_per_msg": cpu / 2, "client_sys_us_per_msg": cpu / 2}
    race.runs[("tcpkit-epoll", 1000, 4096)] = [run(90.0, 4.0)]
    race.runs[("minimal", 1000, 4096)] = [run(100.0, 3.6)]
    monkeypatch.setattr(gen, "PROFILES", {("tcpkit-epoll", "client", (1000, 4096)): {"user": 100, "kernel": 900},
                                          ("minimal", "client", (1000, 4096)): {"user": 50, "kernel": 950}})
    reason = gen.client_reason(race, "tcpkit-epoll", [(1000, 4096)])
    assert "a profile of both clients at 1,000 × 4096 B" in reason
    assert "0.40 µs per message of its CPU in user space" in reason and "and 3.60 in the kernel" in reason
    assert "the minimal client's 0.18 and 3.42" in reason and "+0.22 µs" in reason and "+0.18 µs" in reason


def test_a_trailing_client_is_explained_by_its_user_and_system_time(gen):
    race = gen.Race("msgs_per_s")
    run = lambda rate, user, system: {"msgs_per_s": rate, "client_user_us_per_msg": user,  # noqa: E731
                                      "client_sys_us_per_msg": system}
    race.runs[("tcpkit-uring", 100, 16)] = [run(100.0, 0.5, 3.0)]
    race.runs[("minimal", 100, 16)] = [run(100.0, 0.1, 3.0)]
    race.runs[("tcpkit-uring", 1000, 4096)] = [run(90.0, 0.4, 4.5)]
    race.runs[("minimal", 1000, 4096)] = [run(100.0, 0.2, 4.0)]
    reason = gen.client_reason(race, "tcpkit-uring", [(100, 16), (1000, 4096)])
    assert "at 1,000 × 4096 B" in reason
    assert "0.40 µs of user and 4.50 µs of system" in reason and "0.20 and 4.00" in reason
    assert "+0.20 µs" in reason and "+0.50 µs" in reason


def test_a_missed_throughput_target_says_whether_the_peer_paid_with_cpu(gen):
    class Server:
        def __init__(self, name):
            self.name = name

    servers = [Server("tcpkit (uring)"), Server("libevent"), Server("asio")]
    race = gen.Race("msgs_per_s")
    run = lambda rate, cpu: {"msgs_per_s": rate, "cpu_us_per_msg": cpu}  # noqa: E731
    race.runs[("tcpkit (uring)", 1, 65536)] = [run(90.0, 36.0)]
    race.runs[("libevent", 1, 65536)] = [run(100.0, 75.0)]
    race.runs[("asio", 1, 65536)] = [run(80.0, 40.0)]
    race.runs[("tcpkit (uring)", 10, 16)] = [run(80.0, 4.0)]
    race.runs[("libevent", 10, 16)] = [run(70.0, 5.0)]
    race.runs[("asio", 10, 16)] = [run(100.0, 3.5)]
    race.runs[("tcpkit (uring)", 100, 16)] = [run(90.0, 4.0)]
    race.runs[("libevent", 100, 16)] = [run(70.0, 5.0)]
    race.runs[("asio", 100, 16)] = [run(100.0, 4.1)]
    cells = [(1, 65536), (10, 16), (100, 16)]
    reason = gen.throughput_reason(race, "tcpkit (uring)", servers, cells, 0.95)
    assert "1 × 65536 B: libevent 75.00 against 36.00 µs" in reason and "buys messages/s with CPU" in reason
    assert "clearly less server CPU per message (10 × 16 B: asio 3.50 against 4.00 µs)" in reason
    # Within CPU_CLEARLY_MORE of tcpkit's, either way: about as much.
    assert "about as much server CPU per message (100 × 16 B: asio 4.10 against 4.00 µs)" in reason
    race.runs[("asio", 100, 16)] = [run(100.0, 3.8)]
    reason = gen.throughput_reason(race, "tcpkit (uring)", servers, [(100, 16)], 0.95)
    assert "about as much server CPU per message (100 × 16 B: asio 3.80 against 4.00 µs)" in reason
    race.runs[("tcpkit (uring)", 10, 16)] = [run(100.0, 4.0)]
    reason = gen.throughput_reason(race, "tcpkit (uring)", servers, [(10, 16)], 0.95)
    assert reason == ""


def test_the_fixed_load_is_a_share_of_the_bare_server_and_one_message_per_tick(gen):
    race = gen.Race("msgs_per_s")
    race.runs[(gen.EPOLL_C, 100, 16)] = [{"msgs_per_s": 120000.0}, {"msgs_per_s": 100000.0},
                                         {"msgs_per_s": 110000.0}]
    race.runs[(gen.EPOLL_C, 10, 16)] = [{"msgs_per_s": 110000.0}]
    # 40% of the median run, rounded to hundreds...
    assert gen.fixed_rate(race, 100, 16) == pytest.approx(gen.FIXED_LOAD_SHARE * 110000.0, abs=50)
    # ...but no more than one message per connection per millisecond tick.
    assert gen.fixed_rate(race, 10, 16) == 10 * gen.FIXED_TICKS_PER_S
    assert gen.fixed_rate(race, 1000, 16) is None  # no closed-loop figure to start from


def test_the_cpu_target_uses_the_fixed_load_where_there_is_one(gen):
    class Server:
        def __init__(self, name):
            self.name = name

    servers = [Server(gen.TK_URING), Server(gen.EPOLL_C)]
    one = gen.Race("msgs_per_s")
    fixed = gen.Race("cpu_us_per_msg")
    # Closed loop both fill their core: the same CPU per message.
    one.runs[(gen.TK_URING, 100, 16)] = [{"msgs_per_s": 100.0, "cpu_us_per_msg": 8.0}]
    one.runs[(gen.EPOLL_C, 100, 16)] = [{"msgs_per_s": 100.0, "cpu_us_per_msg": 8.0}]
    fixed.runs[(gen.TK_URING, 100, 16)] = [{"cpu_us_per_msg": 6.0}]
    fixed.runs[(gen.EPOLL_C, 100, 16)] = [{"cpu_us_per_msg": 7.5}]
    rows = gen.targets(one, fixed, servers, gen.Race("x"), gen.Race("x"), {}, [])
    row = next(r for r in rows if r[0].startswith("server CPU per message") and "fixed load" in r[0])
    assert row[2] == "0.80×" and row[3] == "**met**" and "6.00 against 7.50 µs" in row[4]
    # Without a fixed-load run the closed-loop figures decide.
    rows = gen.targets(one, gen.Race("cpu_us_per_msg"), servers, gen.Race("x"), gen.Race("x"), {}, [])
    row = next(r for r in rows if r[0].startswith("server CPU per message ≤ 0.92"))
    assert "fixed load" not in row[0] and row[2] == "1.00×" and row[3] == "**missed**"
    gen.FIXED_RATES[(100, 16)] = 44000.0
    table = "\n".join(gen.fixed_section(fixed))
    assert "| offered msgs/s | 44,000 |" in table
    assert "| **tcpkit (uring)** | 6.00 (0.80×) |" in table and "| epoll (C) | 7.50 (1.00×) |" in table


def test_a_host_that_steals_cpu_time_makes_a_run_not_quiet(gen, monkeypatch):
    # A load average near zero says nothing of the host: a hypervisor that
    # runs other guests on these cores shows only in /proc/stat's steal
    # field, and delays every wake-up the benchmark measures.
    monkeypatch.setattr(gen, "CORES", 2)
    monkeypatch.setitem(gen.LOAD, "samples", [0.1, 1.6, 1.2])
    monkeypatch.setitem(gen.LOAD, "ticks", [(1000, 10), (2000, 240)])
    steal = gen.steal_share()
    assert steal == pytest.approx(0.23)
    assert "not quiet" in gen.load_text(steal) and "23%" in gen.load_text(steal)
    assert "23.0% of the CPU time" in gen.steal_text(steal) and "noisy" in gen.steal_text(steal)
    monkeypatch.setitem(gen.LOAD, "ticks", [(1000, 10), (2000, 11)])
    steal = gen.steal_share()
    assert gen.load_text(steal).startswith("0.10 before the run, 0.05 per core: quiet")
    assert "little enough" in gen.steal_text(steal)


def test_cpu_ticks_reads_the_steal_field(gen):
    ticks = gen.cpu_ticks()
    assert ticks is not None, "no cpu line in /proc/stat"
    total, steal = ticks
    assert 0 <= steal <= total and total > 0


def test_a_missed_cpu_target_with_the_bare_servers_system_calls_says_it_needs_fewer(gen):
    class Server:
        def __init__(self, name):
            self.name = name

    servers = [Server(gen.TK_EPOLL), Server(gen.TK_URING), Server(gen.EPOLL_C)]
    fixed = gen.Race("cpu_us_per_msg")
    for name, cpu in ((gen.TK_EPOLL, 8.3), (gen.TK_URING, 6.5), (gen.EPOLL_C, 7.9)):
        fixed.runs[(name, 100, 16)] = [{"cpu_us_per_msg": cpu}]
    syscalls = {(gen.TK_EPOLL, "pingpong"): {"total": 2.12}, (gen.TK_URING, "pingpong"): {"total": 0.08},
                (gen.EPOLL_C, "pingpong"): {"total": 2.10}}
    cost = {"ns": 950.0, "user_share": 0.48}
    rows = gen.targets(gen.Race("msgs_per_s"), fixed, servers, gen.Race("x"), gen.Race("x"), {}, [], syscalls, cost)
    cpu_rows = {r[1]: r for r in rows if r[0].startswith("server CPU per message ≤ 0.92")}
    epoll = cpu_rows[gen.TK_EPOLL]
    assert epoll[3] == "**missed**"
    # No tick split here (no ticks recorded), so the counts are the reason given.
    assert "; why: it makes 2.12 system calls per message to the bare server's 2.10" in epoll[4]
    assert "0.95 µs here (Machine)" in epoll[4] and "fewer system calls per message" in epoll[4]
    # Without a measured cost the counts still say it, with no cost per call.
    rows = gen.targets(gen.Race("msgs_per_s"), fixed, servers, gen.Race("x"), gen.Race("x"), {}, [], syscalls)
    bare = next(r for r in rows if r[1] == gen.TK_EPOLL and r[0].startswith("server CPU per message ≤ 0.92"))
    assert "2.12 system calls per message" in bare[4] and "(Machine)" not in bare[4]
    # A backend with fewer calls meets it and gets no such reason.
    assert cpu_rows[gen.TK_URING][3] == "**met**" and "system calls" not in cpu_rows[gen.TK_URING][4]
    # A miss with far fewer calls than the bare server is not put down to them.
    syscalls[(gen.TK_EPOLL, "pingpong")] = {"total": 1.5}
    rows = gen.targets(gen.Race("msgs_per_s"), fixed, servers, gen.Race("x"), gen.Race("x"), {}, [], syscalls, cost)
    epoll = next(r for r in rows if r[1] == gen.TK_EPOLL and r[0].startswith("server CPU per message ≤ 0.92"))
    assert epoll[3] == "**missed**" and "system calls" not in epoll[4]


def test_the_machine_table_gives_the_system_calls_cost_and_its_user_share(gen):
    text = gen.system_call_text({"ns": 953.0, "user_share": 0.47})
    assert text.startswith("0.95 µs per `getppid`") and "47% of it counted as the process's user time" in text
    assert gen.system_call_text({}).startswith("not measured")

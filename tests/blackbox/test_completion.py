"""Bash completion (scripts/completion/tcpkit.bash): sourced into a real bash,
it completes subcommands, flags and flag values, and offers exactly the flags
that `tcpkit SUBCOMMAND --help` lists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from test_manpage import SUBCOMMANDS, help_flags


def script() -> Path:
    return Path(os.environ.get("TCPKIT_SOURCE_DIR", REPO_ROOT)) / "scripts" / "completion" / "tcpkit.bash"


def complete(line: str) -> list[str]:
    """What bash offers for <TAB> at the end of `line`, as the completion
    function computes it (COMP_WORDS / COMP_CWORD set as readline would)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    words = line.split(" ")  # a trailing space makes an empty last word
    program = (f"source {script()}\n"
               f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n"
               f"COMP_LINE={line!r}\nCOMP_POINT={len(line)}\n"
               "$(complete -p tcpkit | sed -E 's/.*-F ([^ ]+).*/\\1/')\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_registers_a_completion_function_for_tcpkit():
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"source {script()}; complete -p tcpkit"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"complete -F \S+ tcpkit\n", result.stdout), result.stdout


def test_subcommand_names():
    assert complete("tcpkit se") == ["serve"]
    assert complete("tcpkit c") == ["connect"]
    assert sorted(complete("tcpkit ")) == sorted(["serve", "connect", "bench", "relay", "port",
                                                  "-h", "--help", "-V", "--version"])


def test_flags_of_the_subcommand_in_use():
    assert complete("tcpkit serve --mo") == ["--mode"]
    assert complete("tcpkit connect --he") == ["--help", "--hex"]
    assert complete("tcpkit relay --re") == ["--reset-after"]
    assert complete("tcpkit port --j") == ["--json"]
    # Flags of another subcommand are not offered.
    assert complete("tcpkit connect --mo") == []


def test_values_of_flags_with_fixed_choices():
    assert complete("tcpkit serve --mode ") == ["ack", "echo", "discard", "chat"]
    assert complete("tcpkit serve -m e") == ["echo"]
    assert complete("tcpkit bench --mode p") == ["pingpong"]
    assert complete("tcpkit serve --framing l") == ["line", "length"]
    assert complete("tcpkit connect --encoding g") == ["gbk", "gb18030"]


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_offers_exactly_the_flags_help_lists(subcommand, tcpkit_bin):
    offered = set(complete(f"tcpkit {subcommand} -"))
    listed = help_flags(subcommand)
    assert offered == listed, (f"completion misses {sorted(listed - offered)}, "
                               f"offers stale {sorted(offered - listed)}")


def test_completion_is_installed_by_cmake():
    cmake = (Path(os.environ.get("TCPKIT_SOURCE_DIR", REPO_ROOT)) / "CMakeLists.txt").read_text()
    assert "scripts/completion/tcpkit.bash" in cmake
    assert "bash-completion/completions RENAME tcpkit" in cmake

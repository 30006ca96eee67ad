"""The manual page docs/tcpkit.1: it renders without a single groff warning,
and it documents every flag that `tcpkit SUBCOMMAND --help` lists, and no
long flag that the program does not have, so the two stay in sync."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_tcpkit

SUBCOMMANDS = ["serve", "connect", "bench", "relay", "port"]


def source_dir() -> Path:
    return Path(os.environ.get("TCPKIT_SOURCE_DIR", REPO_ROOT))


def manpage() -> Path:
    return source_dir() / "docs" / "tcpkit.1"


def plain_source() -> str:
    """The roff source with escaped hyphens made plain."""
    return manpage().read_text().replace("\\-", "-")


def sections() -> dict[str, str]:
    """The page's .SH sections by title."""
    parts = re.split(r"^\.SH\s+(.+)$", plain_source(), flags=re.MULTILINE)
    return {title.strip().strip('"'): body for title, body in zip(parts[1::2], parts[2::2])}


def help_flags(subcommand: str) -> set[str]:
    """The flags in the option column of `tcpkit SUB --help` (CLI11's layout:
    an indented line starting with the flag names, comma-separated)."""
    result = run_tcpkit(subcommand, "--help")
    assert result.returncode == 0, result.stderr
    flags: set[str] = set()
    # Only the "Options:" list; the description above it may mention flags too.
    options = result.stdout.split("\nOptions:\n", 1)[-1]
    for line in options.splitlines():
        match = re.match(r"^\s{2}(-[^\s]+)", line)
        if match:
            flags.update(name for name in match.group(1).split(",") if name.startswith("-"))
    assert flags, f"no flags found in `tcpkit {subcommand} --help`:\n{result.stdout}"
    return flags


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_groff_renders_without_warnings():
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    for device in ("-Tutf8", "-Tps"):
        result = subprocess.run(["groff", "-man", "-ww", "-z", device, str(manpage())],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stderr == "", f"groff {device}:\n{result.stderr}"


def test_man_renders_the_page():
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    result = subprocess.run(["man", "--warnings", "-l", str(manpage())], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    text = re.sub(r".\x08", "", result.stdout)  # drop overstrike bold/underline, if any
    assert text.startswith("TCPKIT(1)")
    for title in ("NAME", "SYNOPSIS", "SERVE", "CONNECT", "BENCH", "RELAY", "PORT", "EXIT STATUS"):
        assert re.search(rf"^{title}$", text, re.MULTILINE), title


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_help_flag_is_in_the_manpage(subcommand, tcpkit_bin):
    section = sections()[subcommand.upper()]
    missing = sorted(f for f in help_flags(subcommand) - {"-h", "--help"} if not mentions(section, f))
    assert not missing, f"`tcpkit {subcommand} --help` lists {missing}, but the man page's " \
                        f"{subcommand.upper()} section does not"


def item_lines(section: str) -> list[str]:
    """The lines that name an option: each first line after a .TP."""
    lines = section.splitlines()
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.strip() == ".TP"]


# Regression: the RELAY section named -l and -t, which relay does not have.
@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_manpage_has_no_stale_flags(subcommand, tcpkit_bin):
    section = sections()[subcommand.upper()]
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*[a-z])", section))
    # Short flags where an option is named (prose may quote other commands').
    for line in item_lines(section):
        documented.update(re.findall(r"(?<![\w-])(-[A-Za-z0-9])(?![\w-])", line))
    stale = sorted(documented - help_flags(subcommand))
    assert not stale, f"the man page's {subcommand.upper()} section documents {stale}, " \
                      f"which `tcpkit {subcommand} --help` does not list"


def test_relay_section_names_its_flags():
    section = sections()["RELAY"]
    for flag in ("--listen", "--to", "--delay", "--jitter", "--rate", "--chunk", "--reset-after",
                 "--close-after", "--max-conns"):
        assert mentions(section, flag), flag


def test_manpage_is_installed_by_cmake():
    cmake = (source_dir() / "CMakeLists.txt").read_text()
    assert re.search(r"install\(FILES docs/tcpkit\.1 DESTINATION \$\{CMAKE_INSTALL_MANDIR\}/man1\)", cmake)

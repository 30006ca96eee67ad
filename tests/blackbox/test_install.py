"""Install test: `cmake --install` into a fresh prefix, check what lands there,
then build tests/install/consumer against it with find_package(tcpkit) and run
the result, the way a user of the installed package would."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import build_dir, source_dir

TIMEOUT = 240


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def cache_value(name: str) -> str:
    """A variable from the build tree's CMakeCache.txt ("" when unset)."""
    text = (build_dir() / "CMakeCache.txt").read_text()
    match = re.search(rf"^{name}:[A-Z]+=(.*)$", text, re.MULTILINE)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    run("cmake", "--install", build_dir(), "--prefix", root)
    return root


def test_install_puts_program_headers_and_package_config_in_place(prefix):
    program = prefix / "bin" / "tcpkit"
    assert program.is_file() and os.access(program, os.X_OK)
    result = run(program, "--help")
    assert "tcpkit" in result.stdout

    for header in ("result.h", "unique_fd.h", "endpoint.h", "tcp_stream.h", "tcp_listener.h"):
        assert (prefix / "include" / "tcpkit" / header).is_file(), header
    # Private headers stay private.
    assert not (prefix / "include" / "tcpkit" / "sys.h").exists()
    assert not (prefix / "include" / "sys.h").exists()

    configs = sorted(prefix.glob("lib*/**/cmake/tcpkit/tcpkitConfig.cmake"))
    assert len(configs) == 1, list(prefix.rglob("*"))
    package = configs[0].parent
    for name in ("tcpkitConfigVersion.cmake", "tcpkitTargets.cmake"):
        assert (package / name).is_file(), name
    assert list(package.parent.parent.glob("libtcpkit.*")), "library not installed next to its package"


def test_consumer_builds_against_the_install_and_runs(prefix, tmp_path):
    consumer_build = tmp_path / "consumer-build"
    configure = ["cmake", "-S", source_dir() / "tests" / "install" / "consumer", "-B", consumer_build,
                 "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={prefix}"]
    # A library built with sanitizers needs the same flags (and compiler) in
    # its consumer; pass the build tree's choices through.
    for variable in ("CMAKE_CXX_COMPILER", "CMAKE_CXX_FLAGS", "CMAKE_EXE_LINKER_FLAGS", "CMAKE_BUILD_TYPE"):
        value = cache_value(variable)
        if value:
            configure.append(f"-D{variable}={value}")
    run(*configure)
    run("cmake", "--build", consumer_build)

    consumer = consumer_build / "consumer"
    assert run(consumer, "127.0.0.1:8888").stdout == "127.0.0.1:8888 ipv4 port 8888\n"
    assert run(consumer, "[::1]:80").stdout == "[::1]:80 ipv6 port 80\n"

    bad = subprocess.run([str(consumer), "127.0.0.1"], capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "address '127.0.0.1': missing ':PORT' (write HOST:PORT, or [IPv6]:PORT)"


def test_package_rejects_an_incompatible_major_version(prefix, tmp_path):
    # SameMajorVersion compatibility: asking for tcpkit 99 must fail cleanly.
    project = tmp_path / "wants-v99"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.25)\nproject(wants_v99 LANGUAGES CXX)\n"
        "find_package(tcpkit 99 CONFIG REQUIRED)\n")
    result = subprocess.run(["cmake", "-S", str(project), "-B", str(tmp_path / "b"), "-G", "Ninja",
                             f"-DCMAKE_PREFIX_PATH={prefix}"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "tcpkit" in result.stderr and "99" in result.stderr

"""Packaging test: build the Debian package of this build tree with CPack
into a temporary directory, check its control data (runtime dependencies
declared), unpack it with `dpkg-deb -x`, and use what is inside the way an
installed system would: run the packaged program (--version, and an echo
round trip with a Python client), and build a program against the packaged
library through pkg-config."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, TcpkitProcess, build_dir

TIMEOUT = 600


def run(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def cache_value(name: str) -> str:
    text = (build_dir() / "CMakeCache.txt").read_text()
    match = re.search(rf"^{name}:[A-Z]+=(.*)$", text, re.MULTILINE)
    return match.group(1) if match else ""


def project_version() -> str:
    text = (build_dir() / "CMakeCache.txt").read_text()
    match = re.search(r"^CMAKE_PROJECT_VERSION:STATIC=(.*)$", text, re.MULTILINE)
    assert match, "no CMAKE_PROJECT_VERSION in CMakeCache.txt"
    return match.group(1)


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-deps installs dpkg-dev)")
    config = build_dir() / "CPackConfig.cmake"
    assert config.is_file(), "no CPackConfig.cmake: CMakeLists.txt must include(CPack)"
    out = tmp_path_factory.mktemp("package")
    run("cpack", "--config", config, "-B", out)
    debs = sorted(out.glob("*.deb"))
    assert len(debs) == 1, list(out.iterdir())
    return debs[0]


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    run("dpkg-deb", "-x", deb, root)
    return root


def control(deb: Path, field: str) -> str:
    return run("dpkg-deb", "-f", deb, field).stdout.strip()


def test_package_name_version_and_runtime_dependencies(deb):
    assert control(deb, "Package") == "tcpkit"
    assert control(deb, "Version") == project_version()
    assert deb.name == f"tcpkit_{project_version()}_{control(deb, 'Architecture')}.deb"
    depends = {d.split("(")[0].strip() for d in re.split(r"[,|]", control(deb, "Depends"))}
    assert "libc6" in depends, depends
    assert "libstdc++6" in depends, depends
    # Every shared library the program links comes from a declared package.
    linked = run("ldd", build_dir() / "tcpkit").stdout
    if "libfmt" in linked:
        assert any(d.startswith("libfmt") for d in depends), depends
    if "libssl" in linked:
        assert any(d.startswith("libssl") for d in depends), depends


def test_package_contents(root):
    usr = root / "usr"
    expected = ["bin/tcpkit", "share/man/man1/tcpkit.1", "share/bash-completion/completions/tcpkit",
                "include/tcpkit/tcp_server.h", "include/tcpkit/tcp_stream.h"]
    for path in expected:
        assert (usr / path).is_file(), path
    assert os.access(usr / "bin" / "tcpkit", os.X_OK)
    configs = list(usr.glob("lib*/**/cmake/tcpkit/tcpkitConfig.cmake"))
    assert len(configs) == 1, configs
    # The pkg-config file sits beside the CMake package config.
    libdir = configs[0].parent.parent.parent
    assert (libdir / "pkgconfig" / "tcpkit.pc").is_file()
    assert list(libdir.glob("libtcpkit.*"))
    # Nothing from the build machine leaks in (absolute paths of the build tree).
    assert str(build_dir()) not in (libdir / "pkgconfig" / "tcpkit.pc").read_text()


def test_packaged_program_reports_its_version(root):
    result = run(root / "usr" / "bin" / "tcpkit", "--version")
    assert result.stdout.strip() == f"tcpkit {project_version()}"


def test_packaged_program_echoes_a_round_trip(root):
    with TcpkitProcess(argv=[str(root / "usr" / "bin" / "tcpkit"), "serve", "--mode", "echo",
                             "--port", "0"]) as server:
        match = server.wait_for_line(r"listening on 127\.0\.0\.1:(\d+) \(mode echo", stream="stdout")
        port = int(match.group(1))
        message = "封裝好的 tcpkit echo\n".encode() * 100
        with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as sock:
            sock.settimeout(DEFAULT_TIMEOUT)
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received == message


def pkg_config(root: Path, *args: str) -> str:
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    (pc,) = root.glob("usr/lib*/**/pkgconfig/tcpkit.pc")
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc.parent))
    return run("pkg-config", *args, "tcpkit", env=env).stdout.strip()


def test_pkg_config_points_into_the_unpacked_prefix(root):
    version = pkg_config(root, "--modversion")
    assert version == project_version()
    for extra in (["--define-prefix"], []):  # the prefix is also found relative to the .pc file
        flags = pkg_config(root, *extra, "--cflags", "--libs")
        include = re.search(r"-I(\S+)", flags)
        libdir = re.search(r"-L(\S+)", flags)
        assert include and libdir and "-ltcpkit" in flags.split(), flags
        assert Path(include.group(1)).resolve() == (root / "usr" / "include").resolve(), flags
        assert list(Path(libdir.group(1)).glob("libtcpkit.*")), flags


def test_program_builds_against_the_package_with_pkg_config(root, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    flags = pkg_config(root, "--define-prefix", "--cflags", "--libs").split()
    source = tmp_path / "app.cpp"
    source.write_text(
        '#include <cstdio>\n#include "tcpkit/endpoint.h"\n'
        'int main() {\n'
        '  auto e = tcpkit::Endpoint::parse("[::1]:8888");\n'
        '  if (!e) return 1;\n'
        '  std::printf("%s %d\\n", e->to_string().c_str(), e->port());\n'
        '}\n')
    # A library built with sanitizers needs the same flags in its consumer.
    extra = cache_value("CMAKE_CXX_FLAGS").split() + cache_value("CMAKE_EXE_LINKER_FLAGS").split()
    compiler = cache_value("CMAKE_CXX_COMPILER") or "g++"
    run(compiler, "-std=c++20", *extra, source, "-o", tmp_path / "app", *flags)
    assert run(tmp_path / "app").stdout == "[::1]:8888 8888\n"

"""The API reference: Doxygen over include/tcpkit (docs/Doxyfile, `make docs`)
must run without a single warning, and produce a page for the main classes.

Skipped where doxygen is not installed (scripts/install-deps installs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import source_dir


@pytest.fixture(scope="module")
def doxygen_run(tmp_path_factory):
    if shutil.which("doxygen") is None:
        pytest.skip("doxygen is not installed (scripts/install-deps installs it)")
    out = tmp_path_factory.mktemp("apidocs")
    config = (source_dir() / "docs" / "Doxyfile").read_text() + f"\nOUTPUT_DIRECTORY = {out}\n"
    result = subprocess.run(["doxygen", "-"], input=config, cwd=source_dir(), capture_output=True,
                            text=True, timeout=240)
    return result, out


def test_doxygen_succeeds_without_warnings(doxygen_run):
    result, _ = doxygen_run
    assert result.returncode == 0, result.stderr
    # QUIET = YES: anything on stderr is a warning (or an error).
    assert result.stderr.strip() == "", f"Doxygen warnings:\n{result.stderr}"


def test_reference_has_the_main_page_and_the_public_classes(doxygen_run):
    _, out = doxygen_run
    html = out / "html"
    index = (html / "index.html").read_text()
    assert "tcpkit API reference" in index
    for name in ("TcpServer", "TcpClient", "TcpConnection", "EventLoop", "TcpStream", "TcpListener",
                 "LineCodec", "LengthPrefixCodec", "Buffer", "Endpoint"):
        assert (html / f"classtcpkit_1_1{name}.html").is_file(), name
    assert "set_on_message" in (html / "classtcpkit_1_1TcpServer.html").read_text()


def test_make_docs_runs_doxygen_into_build_docs():
    makefile = (source_dir() / "Makefile").read_text()
    assert "doxygen docs/Doxyfile" in makefile
    doxyfile = (source_dir() / "docs" / "Doxyfile").read_text()
    settings = {}
    for line in doxyfile.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    assert settings["OUTPUT_DIRECTORY"] == "build/docs"
    assert settings["WARN_AS_ERROR"] in ("YES", "FAIL_ON_WARNINGS")
    assert "include/tcpkit" in settings["INPUT"].split()


def test_reference_carries_the_header_comments(doxygen_run):
    """The public headers' comments are Doxygen comments, so the pages say
    what each function does, not only its signature."""
    _, out = doxygen_run
    html = out / "html"
    server = (html / "classtcpkit_1_1TcpServer.html").read_text()
    assert "Binds and listens (SO_REUSEADDR on) on one more address" in server
    buffer_file = (html / "buffer_8h.html").read_text()
    assert "the growable byte container behind every connection" in buffer_file
    namespace = (html / "namespacetcpkit.html").read_text()
    assert "and the connection should be closed with the codec" in namespace  # an enumerator's note

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
    for name in ("TcpServer", "TcpClient", "TcpConnection", "EventLoop", "EventLoopThread", "TcpStream",
                 "TcpListener", "LineCodec", "LengthPrefixCodec", "Buffer", "Endpoint"):
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


LAYERS = ("sys", "blocking sockets", "reactor", "transports", "protocol helpers", "coroutines", "program")


def api_table_rows():
    """(layer, header cell, description) for each row of docs/api.md's layer table."""
    rows = []
    for line in (source_dir() / "docs" / "api.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[0] in ("layer", "---"):
            continue
        rows.append(tuple(cells))
    return rows


def test_api_table_lists_every_public_header_once():
    """Read from the directory, so a header added later (close_reason.h,
    tls_stream.h, ...) fails this test until docs/api.md describes it."""
    headers = sorted(p.name for p in (source_dir() / "include" / "tcpkit").glob("*.h"))
    assert headers, "no public headers found"
    listed = [cell.strip("`") for _, cell, _ in api_table_rows() if cell.startswith("`") and cell.endswith(".h`")]
    missing = [h for h in headers if h not in listed]
    assert not missing, f"public headers missing from docs/api.md's layer table: {missing}"
    stale = [h for h in listed if h not in headers]
    assert not stale, f"docs/api.md lists headers that include/tcpkit/ does not have: {stale}"
    repeated = sorted({h for h in listed if listed.count(h) > 1})
    assert not repeated, f"docs/api.md lists these headers more than once: {repeated}"


def test_api_table_uses_the_design_layers_in_order_with_a_line_each():
    rows = api_table_rows()
    layers = [layer for layer, _, _ in rows]
    assert set(layers) == set(LAYERS), f"layers in docs/api.md: {sorted(set(layers))}"
    order = [LAYERS.index(layer) for layer in layers]
    assert order == sorted(order), "docs/api.md's rows must go bottom up, layer by layer"
    blank = [cell for _, cell, what in rows if not what]
    assert not blank, f"rows without a description: {blank}"

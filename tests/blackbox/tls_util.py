"""Helpers shared by the black-box TLS tests: certificates made with the
openssl program, and Python ssl clients written the way their users write
them. serve_util's recv_exact / recv_line read from these clients too."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, scaled

# Timeouts stretch for a sanitizer build (TCPKIT_TIMEOUT_SCALE).
TIMEOUT = scaled(DEFAULT_TIMEOUT)


def make_cert(directory: Path, name: str = "server", cn: str = "localhost") -> tuple[str, str]:
    """(certificate, key) paths of a self-signed certificate for `cn` and
    127.0.0.1, valid for a day."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl program is needed (scripts/install-deps installs it)")
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=TIMEOUT)
    return str(crt), str(key)


def client_context(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts only `ca_file` and checks the name."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_connect(port: int, ca_file: str, server_name: str = "localhost",
                timeout: float = TIMEOUT, preamble: bytes = b"",
                suppress_ragged_eofs: bool = True) -> ssl.SSLSocket:
    """Connects to 127.0.0.1:port, sends `preamble` in the clear (a PROXY
    header), then completes a verified TLS handshake. With
    suppress_ragged_eofs=False a FIN without close_notify raises
    ssl.SSLEOFError instead of reading as the end."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if preamble:
        raw.sendall(preamble)
    context = client_context(ca_file)
    if not suppress_ragged_eofs:
        # Some Python versions (3.10, 3.11.2) ask OpenSSL to ignore an
        # unexpected EOF by default, and the error never comes.
        context.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return context.wrap_socket(raw, server_hostname=server_name, suppress_ragged_eofs=suppress_ragged_eofs)


def read_to_tls_end(tls: ssl.SSLSocket) -> tuple[bytes, str]:
    """Reads until the peer's end: (the bytes, "close_notify" for a clean TLS
    end or "FIN without close_notify" for a cut). `tls` must come from
    tls_connect(..., suppress_ragged_eofs=False)."""
    data = bytearray()
    try:
        while chunk := tls.recv(65536):
            data += chunk
    except ssl.SSLError as error:
        # SSLEOFError, or (Python 3.11.2) a plain SSLError with OpenSSL's reason.
        if isinstance(error, ssl.SSLEOFError) or error.reason == "UNEXPECTED_EOF_WHILE_READING":
            return bytes(data), "FIN without close_notify"
        raise
    return bytes(data), "close_notify"


def fin_without_close_notify(tls: ssl.SSLSocket) -> None:
    """Sends a FIN under the TLS layer, with no close_notify before it: the
    end that an attacker on the path can forge, or that a crashed peer
    leaves. `tls` still reads TLS afterwards."""
    socket.socket.shutdown(tls, socket.SHUT_WR)


def send_and_cut(port: int, ca_file: str, data: bytes) -> tuple[bytes, str]:
    """A TLS client that sends `data`, then a FIN without close_notify, and
    reads to the server's end: what came back and how it ended, as
    read_to_tls_end() says."""
    with tls_connect(port, ca_file, suppress_ragged_eofs=False) as sock:
        sock.sendall(data)
        fin_without_close_notify(sock)
        return read_to_tls_end(sock)


def plaintext_client_until_closed(port: int, timeout: float = TIMEOUT) -> None:
    """A client that does not speak TLS: sends a line in the clear and reads
    until the TLS side closes the connection (an alert, or nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while plain.recv(4096):
            pass

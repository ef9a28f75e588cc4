"""Fixtures of the network tests: TLS material made in the test run (never a file
from the repository), with trustme when installed, else the openssl CLI."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterator

import pytest


@dataclass(frozen=True)
class TLS:
    server: ssl.SSLContext      # certificate for "localhost" and 127.0.0.1
    client: ssl.SSLContext      # trusts that certificate, verifies host names


def _with_trustme() -> TLS | None:
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return TLS(server, client)


def _with_openssl() -> TLS | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        key, crt = os.path.join(d, "key.pem"), os.path.join(d, "crt.pem")
        try:
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                 "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", key, "-out", crt],
                check=True, capture_output=True, timeout=60)
        except (subprocess.SubprocessError, OSError):
            return None
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(crt, key)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        client.load_verify_locations(crt)
    return TLS(server, client)


@pytest.fixture(scope="session")
def tls() -> Iterator[TLS]:
    made = _with_trustme() or _with_openssl()
    if made is None:
        pytest.skip("no way to make a test certificate: install trustme (test extra) "
                    "or the openssl command")
    yield made

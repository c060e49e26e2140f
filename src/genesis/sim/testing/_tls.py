"""Certificates for a simulator that serves TLS on loopback (``SimConfig.ssl_context``).

A fresh ``trustme`` CA (the ``test`` extra) issues a certificate for ``127.0.0.1`` and
``localhost``. The server side is :attr:`LoopbackTls.server_context`; clients trust the CA
through their default context when ``SSL_CERT_FILE`` names :attr:`LoopbackTls.ca_path`, as a
client of a real private CA would: nothing in Genesis's client code is told about it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["TLS_VERSIONS", "LoopbackTls", "loopback_tls", "trusted_by_default"]

TLS_VERSIONS: Final = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


@attrs.frozen
class LoopbackTls:
    """A server context with a loopback certificate, and the file of the CA that issued it."""

    server_context: ssl.SSLContext
    ca_path: str


@contextlib.contextmanager
def loopback_tls(version: str | None = None) -> Iterator[LoopbackTls]:
    """A fresh CA and server context (pinned to TLS ``version``, "1.3" or "1.2", if given).

    The CA's certificate is in a temporary PEM file while the block runs, removed after it.

    Raises:
        ModuleNotFoundError: ``trustme`` is not installed (``pip install -e '.[test]'``).
    """
    import trustme  # the test extra: only loopback TLS needs it

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if version is not None:
        context.minimum_version = context.maximum_version = TLS_VERSIONS[version]
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    fd, ca_path = tempfile.mkstemp(prefix="genesis-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(authority.cert_pem.bytes())
        yield LoopbackTls(server_context=context, ca_path=ca_path)
    finally:
        os.unlink(ca_path)


@contextlib.contextmanager
def trusted_by_default(tls: LoopbackTls) -> Iterator[None]:
    """Default client contexts made in the block trust ``tls``'s CA (``SSL_CERT_FILE``)."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = tls.ca_path
    try:
        yield
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before

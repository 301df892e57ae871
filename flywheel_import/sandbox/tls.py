"""The sandbox's HTTPS: a server TLS context from a PEM certificate and key.

A rehearsal over ``https://`` exercises the importer's TLS path (certificate checks, handshakes,
connection reuse) as it will run against the real API. Problems with the files are usage
errors naming the flag, found before the database is opened or the port bound.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from flywheel_import.errors import UsageError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context for ``cert`` (PEM, chain allowed) and its private ``key`` (PEM)."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from exc
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise UsageError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its private key "
            f"({exc.reason or exc})"
        ) from exc
    return context

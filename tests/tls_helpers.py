"""Throwaway TLS material for tests: a private CA and a server certificate it signed.

``trustme`` makes them in memory in milliseconds; they are written as PEM files because the
sandbox, like a real server, is configured with paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """PEM paths: the CA to trust, the server's certificate chain, and its private key."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A new CA and a certificate for 127.0.0.1 and localhost, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    leaf = authority.issue_cert(*HOSTS)
    files = TlsFiles(ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem")
    authority.cert_pem.write_to_path(files.ca)
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(files.cert, append=i > 0)
    files.key.touch(mode=0o600)  # private from the first byte
    leaf.private_key_pem.write_to_path(files.key)
    return files

"""URL safety: which hosts are loopback, and URL credentials kept out of every message.

Kept free of the network stack so the CLI's URL checks load nothing heavy.
"""

from __future__ import annotations

import ipaddress
import re

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@]*@")


def redact_userinfo(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host`` wherever it occurs in `text`."""
    return _USERINFO.sub(r"\1***@", text)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` only (brackets allowed).

    Anything else is remote, whatever it looks like: ``127.evil.example``, ``localhost.evil.com``,
    ``0.0.0.0`` (not an address to send to), and IPv4-mapped ``::ffff:127.0.0.1`` (whether it
    reaches loopback depends on the operating system's dual-stack settings).
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback and not (
        isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
    )


def host_port(host: str, port: int | None) -> str:
    """``host:port`` with an IPv6 host in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"

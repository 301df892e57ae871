"""How the sender reaches the API (TLS trust, proxy), and what a failed connection means.

Trust: the system store, plus ``api.ca_bundle`` (a corporate CA) on top; ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` are read by OpenSSL when the context is made. Verification is never off.

Proxy: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (either case), decided once per run for
the one API host. aiohttp's ``trust_env=True`` would do the same per request, on a thread, and
also read ``~/.netrc``, whose entry for the API host makes aiohttp refuse our
``Authorization`` header; computing it here avoids both. A loopback API is never proxied: a
remote proxy cannot reach it, and plain http to it would carry the key to the proxy in clear.

:func:`describe` turns a transport exception into a :class:`Failure` (a :class:`Kind` and one
line naming the host and what to check); it is pure, so each branch is tested on its own.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path

import aiohttp
import yarl

from .errors import ConfigError, UsageError
from .urls import host_port, is_loopback, redact_userinfo

#: X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH: a trusted certificate
#: for another name, which no CA bundle mends.
_NAME_MISMATCH = frozenset({62, 63, 64})


# --- trust -----------------------------------------------------------------------------------


def tls_context(ca_bundle: Path | None = None, *, where: str = "api.ca_bundle") -> ssl.SSLContext:
    """The system trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured) plus `ca_bundle`.

    A `ca_bundle` that is missing or holds no certificate is a :class:`ConfigError` naming
    `where` (the config file and key) and the path.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_bundle is None:
        return context
    if not ca_bundle.is_file():
        state = "is a folder (give a PEM file)" if ca_bundle.is_dir() else "file not found"
        raise ConfigError(f"{where}: {ca_bundle}: {state}")
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (ssl.SSLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise ConfigError(
            f"{where}: {ca_bundle}: not a PEM file of CA certificates ({reason})"
        ) from None
    return context


# --- proxy -----------------------------------------------------------------------------------


def env_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"http": ..., "https": ..., "no": ...}`` from ``*_PROXY`` variables, as urllib reads them.

    The lower-case name wins over the upper-case one (an empty one turns it off);
    ``HTTP_PROXY`` is ignored in a CGI request (``REQUEST_METHOD`` set), where a client can set
    it through a ``Proxy:`` header.
    """
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        if value and name[-6:].lower() == "_proxy":
            proxies[name[:-6].lower()] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)
    for name, value in environ.items():
        if name[-6:] == "_proxy":  # lower case: set, or emptied to turn the other one off
            if value:
                proxies[name[:-6].lower()] = value
            else:
                proxies.pop(name[:-6].lower(), None)
    return proxies


def proxy_for(url: yarl.URL, environ: Mapping[str, str] | None = None) -> yarl.URL | None:
    """The proxy to reach `url` through, or None to connect directly.

    None for a loopback host, a host covered by ``NO_PROXY``, or no proxy set for the scheme.
    Only ``http://`` proxies are supported (a CONNECT tunnel carries the TLS of an https API);
    any other scheme is a :class:`UsageError` rather than a silent direct connection.
    """
    host = url.host
    if host is None or is_loopback(host):
        return None
    proxies = env_proxies(os.environ if environ is None else environ)
    raw = proxies.get(url.scheme)
    if not raw or no_proxy_covers(proxies.get("no", ""), host, url.port):
        return None
    proxy = yarl.URL(raw if "://" in raw else f"http://{raw}")
    if proxy.scheme != "http" or not proxy.host:
        raise UsageError(
            f"{proxy_variable(url)} must be an http://host:port proxy URL, got "
            f"{redact_userinfo(raw)!r}"
        )
    return proxy


def no_proxy_covers(no_proxy: str, host: str, port: int | None = None) -> bool:
    """Whether a ``NO_PROXY`` list names `host` (and `port`, when an entry gives one).

    Entries, comma-separated: ``*`` (everything), a domain (``example.com`` or
    ``.example.com``: it and every subdomain), an IP address or a CIDR block
    (``10.0.0.0/8``), each optionally with ``:port``.
    """
    host = host.strip("[]").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if not entry or (entry_port is not None and entry_port != port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.lstrip("*").lstrip(".").rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` -> (host, port); an IPv6 address without brackets keeps its colons."""
    head, sep, tail = entry.rpartition(":")
    if sep and tail.isdigit() and (head.endswith("]") or ":" not in head):
        return head, int(tail)
    return entry, None


def proxy_variable(url: yarl.URL) -> str:
    """The environment variable that names the proxy for `url`."""
    return "HTTPS_PROXY" if url.scheme == "https" else "HTTP_PROXY"


# --- failures --------------------------------------------------------------------------------


class Kind(StrEnum):
    """What a failed attempt says about the endpoint (the policy is in ``reachability``)."""

    TLS = "tls"  # certificate not trusted, or no TLS there: waiting will not change it
    PROXY_DENIED = "proxy-denied"  # the proxy refused the tunnel (407, 403...)
    DNS = "dns"  # the host does not resolve
    REFUSED = "refused"  # nothing listens there (the API, the proxy), or the proxy cannot reach it
    TIMEOUT = "timeout"
    NETWORK = "network"  # anything else: a reset, a dropped connection


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: its kind, and one line naming the host and what to check."""

    kind: Kind
    text: str


def describe(
    exc: BaseException,
    *,
    timeout: float,
    proxy: yarl.URL | None = None,
    variable: str = "HTTPS_PROXY",
) -> Failure:
    """Map an exception from one POST to a :class:`Failure`; never echoes URL credentials.

    `timeout` is the per-attempt limit (for the message); `proxy` the proxy in use, if any, and
    `variable` the environment variable that named it. The text of a timeout starts with
    ``timeout``, which is how :func:`.outcomes.classify` codes it ``TIMEOUT``.
    """
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it
        return Failure(Kind.TIMEOUT, f"timeout after {timeout:g}s")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _untrusted(exc)
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = _ssl_reason(exc.os_error) or exc.strerror or type(exc).__name__
        return Failure(
            Kind.TLS,
            f"TLS handshake with {host_port(exc.host, exc.port)} failed: "
            f"{reason}; check that api.url is an https endpoint",
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        where = host_port(exc.host, exc.port)
        return Failure(
            Kind.REFUSED,
            f"cannot connect to proxy {where} ({variable}): "
            f"{_strerror(exc.os_error)}; check {variable}",
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return _proxy_answer(exc, proxy, variable)
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error, where = exc.os_error, host_port(exc.host, exc.port)
        if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(
            os_error, socket.gaierror
        ):
            return Failure(
                Kind.DNS, f"cannot resolve host {exc.host}: {_strerror(os_error)}; check api.url"
            )
        if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
            return Failure(
                Kind.REFUSED, f"connection refused by {where}: is the API running? check api.url"
            )
        return Failure(Kind.NETWORK, f"cannot connect to {where}: {_strerror(os_error)}")
    text = str(exc)
    return Failure(
        Kind.NETWORK,
        redact_userinfo(f"{type(exc).__name__}: {text}" if text else type(exc).__name__),
    )


def _untrusted(exc: aiohttp.ClientConnectorCertificateError) -> Failure:
    cert = exc.certificate_error
    reason = (getattr(cert, "verify_message", None) or _ssl_reason(cert) or str(cert)).rstrip(".")
    if getattr(cert, "verify_code", None) in _NAME_MISMATCH:
        hint = "check api.url: the certificate names another host"
    else:
        hint = "set api.ca_bundle or SSL_CERT_FILE"
    return Failure(Kind.TLS, f"certificate verify failed for {exc.host}: {reason}; {hint}")


def _proxy_answer(
    exc: aiohttp.ClientHttpProxyError, proxy: yarl.URL | None, variable: str
) -> Failure:
    """The proxy answered the CONNECT with an error status."""
    status = exc.status
    shown = host_port(proxy.host, proxy.port) if proxy is not None and proxy.host else "the proxy"
    answer = f"{status} {_phrase(status, exc.message)}"
    if 400 <= status < 500:
        hint = f"check {variable}" + (" (its user and password)" if status == 407 else "")
        return Failure(Kind.PROXY_DENIED, f"proxy {shown} refused the tunnel: {answer}; {hint}")
    return Failure(
        Kind.REFUSED,
        f"proxy {shown} could not reach the API ({answer}): check api.url and {variable}",
    )


def _phrase(status: int, message: str | None) -> str:
    if message:
        return redact_userinfo(message)
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _ssl_reason(error: BaseException) -> str | None:
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason else None


def _strerror(error: OSError) -> str:
    return redact_userinfo(error.strerror or str(error) or type(error).__name__)

"""Endpoints that cannot work stop the run fast; TLS trust (system, api.ca_bundle,
SSL_CERT_FILE) and proxies (HTTPS_PROXY, NO_PROXY) work as every HTTP tool's do.

Everything runs against real servers on loopback: the scripted server (https when given a
context made by a private trustme CA), a small CONNECT proxy, ports nobody listens on, and
names under ``.invalid`` that no resolver knows. Backoff waits are injected where a test
drives the sender directly; runs of the CLI use few attempts, so they stop within a second
or two. Failures are described by a pure function, tested here on exceptions captured from
real connection attempts.
"""

from __future__ import annotations

import contextlib
import json
import random
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from flywheel_import import ApiAbort, run_import_async
from flywheel_import.errors import ConfigError, ErrorCode, UsageError
from flywheel_import.outcomes import Decision, abort_message, classify
from flywheel_import.reachability import Reachability
from flywheel_import.sender import Sender, SendSettings
from flywheel_import.transport import (
    Kind,
    describe,
    env_proxies,
    no_proxy_covers,
    proxy_for,
    tls_context,
)
from tests.connect_proxy import ConnectProxy
from tests.network_helpers import (
    KEY,
    PROXIED_HOST,
    PROXY_VARIABLES,
    LocalCA,
    free_port,
    make_ca,
    run_cli,
    write_import,
)
from tests.scripted_server import Reply, ScriptedServer

BODY = b'{"event": {"event": "signup", "user_id": "u1", "event_id": "evt-1"}}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp needs asyncio


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return make_ca()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's environment without any proxy variable (tests set the ones they need)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def report_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return data


def assert_stopped_with_nothing_rejected(folder: Path, rows: int) -> dict[str, Any]:
    """The run stopped: nothing accepted or rejected, every row still to do."""
    report = report_of(folder)
    assert report["completed"] is False
    assert (report["rows_read"], report["accepted"], report["rejected"]) == (rows, 0, 0)
    assert report["unsettled"] == rows
    assert (
        not (folder / "rejects.csv").exists()
        or "RETRIES_EXHAUSTED" not in (folder / "rejects.csv").read_text()
    )
    return report


class FakeTime:
    """Clock and sleep for the sender: sleeping moves the clock and returns at once; `hook`
    runs on each sleep (to start a server "later")."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.hook: Any = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        if self.hook is not None:
            await self.hook(len(self.sleeps))


def make_sender(url: str, ft: FakeTime, **settings: Any) -> Sender:
    return Sender(
        SendSettings(url, KEY, **settings), sleep=ft.sleep, clock=ft.clock, rng=random.Random(5)
    )


# --- describe(): real failures -> kind and one line --------------------------------------------


async def failure_of(
    url: str, *, ssl_context: ssl.SSLContext | None = None, proxy: str | None = None
) -> BaseException:
    """The exception one real POST to `url` raises."""
    connector = aiohttp.TCPConnector(ssl=ssl_context or tls_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            resp = await session.post(
                url, data=b"{}", proxy=proxy, timeout=aiohttp.ClientTimeout(total=10)
            )
        except Exception as exc:
            return exc
        resp.release()
    raise AssertionError(f"POST {url} did not fail")


@pytest.mark.anyio
async def test_describe_a_refused_connection_names_host_and_port_and_says_what_to_check() -> None:
    port = free_port()
    failure = describe(await failure_of(f"http://127.0.0.1:{port}/v1/events"), timeout=10)
    assert failure.kind is Kind.REFUSED
    assert failure.text == (
        f"connection refused by 127.0.0.1:{port}: is the API running? check api.url"
    )


@pytest.mark.anyio
async def test_describe_an_unresolvable_host_names_it() -> None:
    failure = describe(await failure_of("https://api.exmaple.invalid/v1/events"), timeout=10)
    assert failure.kind is Kind.DNS
    assert failure.text.startswith("cannot resolve host api.exmaple.invalid: ")
    assert failure.text.endswith("; check api.url")


@pytest.mark.anyio
async def test_describe_an_untrusted_certificate_names_the_host_and_the_fix(ca: LocalCA) -> None:
    async with ScriptedServer(ssl_context=ca.server) as server:
        exc = await failure_of(server.url + "/v1/events")
    failure = describe(exc, timeout=10)
    assert failure.kind is Kind.TLS
    assert failure.text.startswith("certificate verify failed for 127.0.0.1: ")
    assert failure.text.endswith("; set api.ca_bundle or SSL_CERT_FILE")
    assert "\n" not in failure.text


@pytest.mark.anyio
async def test_describe_a_certificate_for_another_name_points_at_the_url() -> None:
    other = make_ca("api.other.example")
    trusting = tls_context()
    other.ca.configure_trust(trusting)
    async with ScriptedServer(ssl_context=other.server) as server:
        exc = await failure_of(server.url, ssl_context=trusting)
    failure = describe(exc, timeout=10)
    assert failure.kind is Kind.TLS
    assert "certificate verify failed for 127.0.0.1" in failure.text
    assert failure.text.endswith("check api.url: the certificate names another host")


@pytest.mark.anyio
async def test_describe_https_to_a_plain_http_port_is_a_tls_failure() -> None:
    async with ScriptedServer() as server:
        exc = await failure_of(server.url.replace("http://", "https://"))
    failure = describe(exc, timeout=10)
    assert failure.kind is Kind.TLS
    assert failure.text.startswith(f"TLS handshake with 127.0.0.1:{server.port} failed: ")


@pytest.mark.anyio
async def test_describe_a_proxy_refusing_the_tunnel_never_shows_its_password(ca: LocalCA) -> None:
    trusting = tls_context()
    ca.ca.configure_trust(trusting)
    async with ConnectProxy(credentials=("alice", "right")) as proxy:
        bad = proxy.url.replace("://", "://alice:hunter2@")
        exc = await failure_of(
            f"https://{PROXIED_HOST}:443/v1/events", ssl_context=trusting, proxy=bad
        )
    assert "hunter2" in str(exc)  # aiohttp's own text would leak it
    failure = describe(exc, timeout=10, proxy=yarl.URL(bad))
    assert failure.kind is Kind.PROXY_DENIED
    assert failure.text == (
        f"proxy {proxy.url.removeprefix('http://')} refused the tunnel: 407 "
        "Proxy Authentication Required; check HTTPS_PROXY (its user and "
        "password)"
    )


@pytest.mark.anyio
async def test_describe_a_proxy_nobody_listens_on_names_the_variable() -> None:
    port = free_port()
    exc = await failure_of(
        f"https://{PROXIED_HOST}/v1/events", proxy=f"http://bob:Zq9-secret@127.0.0.1:{port}"
    )
    failure = describe(exc, timeout=10, variable="HTTPS_PROXY")
    assert failure.kind is Kind.REFUSED
    assert failure.text.startswith(f"cannot connect to proxy 127.0.0.1:{port} (HTTPS_PROXY): ")
    assert "Zq9-secret" not in failure.text


@pytest.mark.anyio
async def test_describe_a_proxy_that_cannot_reach_the_api_is_like_a_refused_connection() -> None:
    async with ConnectProxy() as proxy:
        exc = await failure_of(f"https://{PROXIED_HOST}:{free_port()}/v1/events", proxy=proxy.url)
    failure = describe(exc, timeout=10, proxy=yarl.URL(proxy.url))
    assert failure.kind is Kind.REFUSED
    assert failure.text == (
        f"proxy {proxy.url.removeprefix('http://')} could not reach the API "
        "(502 Bad Gateway): check api.url and HTTPS_PROXY"
    )


def test_describe_timeouts_and_other_errors_without_url_credentials() -> None:
    assert describe(TimeoutError(), timeout=2.5).text == "timeout after 2.5s"
    assert describe(TimeoutError(), timeout=2.5).kind is Kind.TIMEOUT
    dropped = describe(aiohttp.ServerDisconnectedError(), timeout=1)
    assert (dropped.kind, dropped.text) == (
        Kind.NETWORK,
        "ServerDisconnectedError: Server disconnected",
    )
    odd = describe(OSError("via http://u:pa55@proxy:3128 failed"), timeout=1)
    assert odd.kind is Kind.NETWORK and "pa55" not in odd.text and "http://***@proxy" in odd.text


# --- the policy -----------------------------------------------------------------------------


def test_untrusted_tls_or_a_proxy_refusing_the_tunnel_stop_at_once_before_any_success() -> None:
    for kind in (Kind.TLS, Kind.PROXY_DENIED):
        assert Reachability().on_failure(kind, "why", 0.0) == "why"


def test_dns_and_refused_wait_for_the_grace_before_stopping() -> None:
    reach = Reachability(grace=10.0, min_failures=3)
    assert reach.on_failure(Kind.REFUSED, "refused", 0.0) is None
    assert reach.on_failure(Kind.REFUSED, "refused", 1.0) is None
    assert reach.on_failure(Kind.DNS, "dns", 9.9) is None  # three failures, not 10 s yet
    assert reach.on_failure(Kind.DNS, "dns", 10.0) == "dns (4 attempts over 10.0s)"
    many_fast = Reachability(grace=10.0, min_failures=3)
    for _ in range(50):  # many workers failing at once do not shorten the wait
        assert many_fast.on_failure(Kind.REFUSED, "refused", 0.5) is None


def test_a_row_out_of_attempts_stops_the_run_instead_of_ending_retries_exhausted() -> None:
    reach = Reachability(grace=10.0)
    assert reach.on_failure(Kind.REFUSED, "refused", 0.0, last=True) == (
        "refused (1 attempt over 0.0s)"
    )


def test_after_a_success_no_failure_stops_the_run() -> None:
    reach = Reachability(grace=0.0, min_failures=1)
    reach.on_success()
    for kind in Kind:
        assert reach.on_failure(kind, "x", 100.0, last=True) is None


def test_timeouts_and_dropped_connections_never_stop_the_run() -> None:
    reach = Reachability(grace=0.0, min_failures=1)
    for kind in (Kind.TIMEOUT, Kind.NETWORK):
        assert reach.on_failure(kind, "x", 100.0, last=True) is None


# --- wrong endpoint: classify and the message -------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308, 404, 405, 407])
def test_classify_redirects_404_405_and_407_stop_the_run(status: int) -> None:
    verdict = classify(status, b"", {}, None)
    assert (verdict.decision, verdict.code) == (Decision.ABORT, f"HTTP_{status}")


def test_a_redirect_names_where_it_points_without_credentials() -> None:
    verdict = classify(301, b"", {"Location": "https://u:pw@api.example.com/v1/events"}, None)
    assert verdict.message == "redirects to https://***@api.example.com/v1/events"
    line = abort_message(301, verdict.message, "http://api.example.com/v1/events")
    assert line == (
        "POST http://api.example.com/v1/events answered 301 Moved Permanently "
        "(redirects to https://***@api.example.com/v1/events): check api.url "
        "(redirects are not followed)"
    )


def test_wrong_endpoint_message_names_url_and_status_and_differs_from_a_refused_key() -> None:
    url = "https://api.example.com/v1/events"
    assert abort_message(404, "Not Found", url) == (
        "POST https://api.example.com/v1/events answered 404 Not Found: check api.url"
    )
    assert abort_message(405, "only GET here", url) == (
        "POST https://api.example.com/v1/events answered 405 Method Not Allowed: check api.url "
        "(API said: only GET here)"
    )
    assert "HTTPS_PROXY" in abort_message(407, "Proxy Authentication Required", url)
    refused = abort_message(401, "Invalid API key", url)
    assert refused.startswith("API refused the key (HTTP 401)") and "api.url" not in refused


# --- the sender: fail fast before the first success, retry after ------------------------------


@pytest.mark.anyio
async def test_refused_before_any_success_stops_the_run_and_never_exhausts_a_row() -> None:
    ft = FakeTime()
    port = free_port()
    async with make_sender(f"http://127.0.0.1:{port}", ft, max_attempts=100) as sender:
        with pytest.raises(ApiAbort) as stop:
            await sender.send(BODY)
        with pytest.raises(ApiAbort):  # every later send too
            await sender.send(BODY)
    assert str(stop.value).startswith(
        f"connection refused by 127.0.0.1:{port}: is the API running? check api.url ("
    )
    assert ft.now - 1000.0 >= 10.0  # the grace was given
    assert len(ft.sleeps) < 20  # and no more
    assert sender.stats.exhausted == 0 and sender.stats.rejected == 0


@pytest.mark.anyio
async def test_an_api_that_starts_within_the_grace_is_waited_for() -> None:
    ft = FakeTime()
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:

        async def start_on_second_wait(n: int) -> None:
            if n == 2:
                await stack.enter_async_context(ScriptedServer(port=port))

        ft.hook = start_on_second_wait
        async with make_sender(f"http://127.0.0.1:{port}", ft) as sender:
            out = await sender.send(BODY)
    assert (out.accepted, out.attempts) == (True, 3)
    assert sender.stats.errors == {"NETWORK_ERROR": 2}


@pytest.mark.anyio
async def test_refused_after_a_success_is_retried_as_before() -> None:
    ft = FakeTime()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(ScriptedServer())
        sender = await stack.enter_async_context(
            make_sender(server.url, ft, max_attempts=3, grace=0.0)
        )
        assert (await sender.send(BODY)).accepted
        await server.__aexit__(None, None, None)  # the API goes away mid-run
        out = await sender.send(BODY)
    assert (out.accepted, out.code, out.attempts) == (False, ErrorCode.RETRIES_EXHAUSTED, 3)
    assert out.message is not None and "connection refused" in out.message
    assert not sender.aborted


@pytest.mark.anyio
async def test_a_404_stops_every_later_send_and_rejects_nothing() -> None:
    ft = FakeTime()
    async with (
        ScriptedServer(then=Reply(404, b"")) as server,
        make_sender(server.url + "/wrong", ft) as sender,
    ):
        with pytest.raises(ApiAbort) as stop:
            await sender.send(BODY)
        with pytest.raises(ApiAbort):
            await sender.send(BODY)
    assert str(stop.value) == (
        f"POST {server.url}/wrong/v1/events answered 404 Not Found: check api.url"
    )
    assert len(server.requests) == 1 and sender.stats.rejected == 0


# --- whole runs: TLS trust ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_untrusted_tls_server_stops_the_cli_with_exit_3_naming_the_host(
    tmp_path: Path, ca: LocalCA
) -> None:
    cfg = write_import(tmp_path, rows=40, rate_limit=0, concurrency=4)
    async with ScriptedServer(ssl_context=ca.server) as server:
        result = await run_cli(
            "run",
            str(cfg),
            "--api-url",
            server.url,
            drop=("SSL_CERT_FILE", "SSL_CERT_DIR", *PROXY_VARIABLES),
        )
    assert result.code == 3, result.err
    [line] = result.err.strip().splitlines()
    assert "certificate verify failed for 127.0.0.1" in line
    assert "api.ca_bundle or SSL_CERT_FILE" in line and "Traceback" not in result.err
    assert server.requests == []  # no request got past the handshake
    report = assert_stopped_with_nothing_rejected(tmp_path, 40)
    assert report["sending"]["requests"] <= 4  # at most one attempt per worker: at once


@pytest.mark.anyio
async def test_ca_bundle_relative_to_the_config_makes_the_server_trusted(
    tmp_path: Path, ca: LocalCA, no_proxy_env: pytest.MonkeyPatch
) -> None:
    (tmp_path / "certs").mkdir()
    ca.write_pem(tmp_path / "certs" / "corp-ca.pem")
    cfg = write_import(tmp_path, rows=25, rate_limit=0, ca_bundle="certs/corp-ca.pem")
    async with ScriptedServer(ssl_context=ca.server) as server:
        report = await run_import_async(cfg, api_url=server.url, key=KEY)
    assert (report.accepted, report.rejected, report.completed) == (25, 0, True)
    assert len(server.requests) == 25


@pytest.mark.anyio
async def test_ssl_cert_file_in_the_environment_makes_the_server_trusted(
    tmp_path: Path, ca: LocalCA
) -> None:
    pem = ca.write_pem(tmp_path / "ca.pem")
    cfg = write_import(tmp_path, rows=15, rate_limit=0)
    async with ScriptedServer(ssl_context=ca.server) as server:
        result = await run_cli(
            "run",
            str(cfg),
            "--api-url",
            server.url,
            env={"SSL_CERT_FILE": str(pem)},
            drop=PROXY_VARIABLES,
        )
    assert result.code == 0, result.err
    assert report_of(tmp_path)["accepted"] == 15 and len(server.requests) == 15


@pytest.mark.anyio
async def test_a_missing_ca_bundle_is_a_one_line_config_error_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    cfg = write_import(tmp_path, rows=3, ca_bundle="nowhere/ca.pem")
    async with ScriptedServer() as server:
        result = await run_cli("run", str(cfg), "--api-url", server.url)
    assert result.code == 2
    [line] = result.err.strip().splitlines()
    assert f"{cfg}: api.ca_bundle: {tmp_path / 'nowhere' / 'ca.pem'}: file not found" in line
    assert server.requests == [] and not (tmp_path / "report.json").exists()


def test_a_ca_bundle_without_certificates_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"x.yaml: api.ca_bundle: .*ca.pem: not a PEM file"):
        tls_context(junk, where="x.yaml: api.ca_bundle")
    with pytest.raises(ConfigError, match="is a folder"):
        tls_context(tmp_path, where="x.yaml: api.ca_bundle")


# --- whole runs: hosts that do not resolve, ports nobody listens on, wrong paths ---------------


@pytest.mark.anyio
async def test_a_host_that_does_not_resolve_stops_the_cli_with_exit_3(tmp_path: Path) -> None:
    cfg = write_import(tmp_path, rows=30, rate_limit=0, concurrency=4, max_attempts=2)
    result = await run_cli(
        "run", str(cfg), "--api-url", "https://api.exmaple.invalid", drop=PROXY_VARIABLES
    )
    assert result.code == 3, result.err
    [line] = result.err.strip().splitlines()
    assert "cannot resolve host api.exmaple.invalid: " in line and "check api.url" in line
    assert_stopped_with_nothing_rejected(tmp_path, 30)


@pytest.mark.anyio
async def test_a_port_nobody_listens_on_stops_the_cli_with_exit_3(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_import(tmp_path, rows=30, rate_limit=0, concurrency=4, max_attempts=3)
    result = await run_cli("run", str(cfg), "--api-url", f"http://127.0.0.1:{port}")
    assert result.code == 3, result.err
    [line] = result.err.strip().splitlines()
    assert f"connection refused by 127.0.0.1:{port}: is the API running? check api.url" in line
    assert_stopped_with_nothing_rejected(tmp_path, 30)
    # The summary on stdout says the run stopped and how much is still to do.
    assert "Import STOPPED" in result.out and "not settled (still to do): 30" in result.out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (Reply(404, b"404: Not Found"), "answered 404 Not Found: check api.url"),
        (Reply(405, b""), "answered 405 Method Not Allowed: check api.url"),
        (
            Reply(308, b"", {"Location": "https://elsewhere.example/v1/events"}),
            "answered 308 Permanent Redirect (redirects to https://elsewhere.example/v1/events)",
        ),
        (Reply(407, b""), "answered 407 Proxy Authentication Required: check HTTPS_PROXY"),
    ],
    ids=["404", "405", "308", "407"],
)
async def test_a_wrong_endpoint_stops_the_run_instead_of_rejecting_every_row(
    tmp_path: Path, reply: Reply, said: str
) -> None:
    cfg = write_import(tmp_path, rows=200, rate_limit=0, concurrency=4)
    async with ScriptedServer(then=reply) as server:
        with pytest.raises(ApiAbort) as stop:
            await run_import_async(cfg, api_url=server.url + "/api", key=KEY)
    assert str(stop.value).startswith(f"POST {server.url}/api/v1/events {said}")
    assert "refused the key" not in str(stop.value)
    assert len(server.requests) <= 4  # at most the requests already in flight
    assert_stopped_with_nothing_rejected(tmp_path, 200)


# --- proxies -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_https_proxy_carries_the_run_and_never_sees_the_key(
    tmp_path: Path, ca: LocalCA, no_proxy_env: pytest.MonkeyPatch
) -> None:
    ca.write_pem(tmp_path / "ca.pem")
    cfg = write_import(tmp_path, rows=20, rate_limit=0, concurrency=3, ca_bundle="ca.pem")
    async with ScriptedServer(ssl_context=ca.server) as server, ConnectProxy() as proxy:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        report = await run_import_async(
            cfg, api_url=f"https://{PROXIED_HOST}:{server.port}", key=KEY
        )
    assert (report.accepted, report.rejected) == (20, 0)
    assert 1 <= proxy.tunnels <= 3  # one tunnel per pooled connection, reused
    assert len(server.requests) == 20
    for line, headers in proxy.connects:
        assert line == f"CONNECT {PROXIED_HOST}:{server.port} HTTP/1.1"
        assert KEY not in json.dumps(headers)


@pytest.mark.anyio
async def test_proxy_credentials_in_https_proxy_are_used(
    tmp_path: Path, ca: LocalCA, no_proxy_env: pytest.MonkeyPatch
) -> None:
    ca.write_pem(tmp_path / "ca.pem")
    cfg = write_import(tmp_path, rows=5, rate_limit=0, ca_bundle="ca.pem")
    async with (
        ScriptedServer(ssl_context=ca.server) as server,
        ConnectProxy(credentials=("alice", "p@ss w0rd")) as proxy,
    ):
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url.replace("://", "://alice:p%40ss%20w0rd@"))
        report = await run_import_async(
            cfg, api_url=f"https://{PROXIED_HOST}:{server.port}", key=KEY
        )
    assert report.accepted == 5 and proxy.tunnels >= 1


@pytest.mark.anyio
async def test_a_proxy_refusing_the_credentials_stops_the_run_without_printing_them(
    tmp_path: Path, ca: LocalCA
) -> None:
    ca.write_pem(tmp_path / "ca.pem")
    cfg = write_import(tmp_path, rows=10, rate_limit=0, concurrency=2, ca_bundle="ca.pem")
    async with (
        ScriptedServer(ssl_context=ca.server) as server,
        ConnectProxy(credentials=("alice", "right")) as proxy,
    ):
        result = await run_cli(
            "run",
            str(cfg),
            "--api-url",
            f"https://{PROXIED_HOST}:{server.port}",
            env={"HTTPS_PROXY": proxy.url.replace("://", "://alice:Wr0ngPa55@")},
            drop=PROXY_VARIABLES,
        )
    assert result.code == 3, result.err
    [line] = result.err.strip().splitlines()
    assert "refused the tunnel: 407 Proxy Authentication Required" in line
    for text in (result.err, result.out, (tmp_path / "report.json").read_text()):
        assert "Wr0ngPa55" not in text
    assert server.requests == [] and proxy.tunnels == 0
    assert_stopped_with_nothing_rejected(tmp_path, 10)


@pytest.mark.anyio
async def test_no_proxy_covering_the_host_bypasses_the_proxy(
    tmp_path: Path, ca: LocalCA, no_proxy_env: pytest.MonkeyPatch
) -> None:
    ca.write_pem(tmp_path / "ca.pem")
    cfg = write_import(tmp_path, rows=10, rate_limit=0, max_attempts=1, ca_bundle="ca.pem")
    async with ScriptedServer(ssl_context=ca.server) as server, ConnectProxy() as proxy:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        no_proxy_env.setenv("NO_PROXY", "localhost,.flywheel.test")
        with pytest.raises(ApiAbort, match=f"cannot resolve host {PROXIED_HOST}"):
            # direct, so this machine must resolve the name itself, and cannot
            await run_import_async(cfg, api_url=f"https://{PROXIED_HOST}:{server.port}", key=KEY)
    assert proxy.connects == [] and proxy.tunnels == 0


@pytest.mark.anyio
async def test_a_loopback_api_is_never_sent_through_a_proxy(
    tmp_path: Path, no_proxy_env: pytest.MonkeyPatch
) -> None:
    cfg = write_import(tmp_path, rows=5, rate_limit=0)
    async with ScriptedServer() as server, ConnectProxy() as proxy:
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        report = await run_import_async(cfg, api_url=server.url, key=KEY)
    assert report.accepted == 5 and proxy.connects == []


@pytest.mark.anyio
async def test_a_netrc_entry_does_not_get_in_the_way_of_the_key(
    tmp_path: Path, no_proxy_env: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password something\n")
    netrc.chmod(0o600)
    no_proxy_env.setenv("NETRC", str(netrc))
    cfg = write_import(tmp_path, rows=5, rate_limit=0)
    async with ScriptedServer() as server:
        report = await run_import_async(cfg, api_url=server.url, key=KEY)
    assert report.accepted == 5
    assert {r.headers["Authorization"] for r in server.requests} == {KEY}


def test_proxy_for_follows_https_proxy_http_proxy_and_no_proxy() -> None:
    api = yarl.URL("https://api.flywheel.cx/v1/events")
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "HTTP_PROXY": "http://other:8080"}
    assert proxy_for(api, env) == yarl.URL("http://proxy.corp:3128")
    assert proxy_for(yarl.URL("http://api.flywheel.cx"), env) == yarl.URL("http://other:8080")
    assert proxy_for(api, {"https_proxy": "proxy.corp:3128"}) == yarl.URL("http://proxy.corp:3128")
    assert proxy_for(api, {}) is None
    for no in (
        "*",
        "flywheel.cx",
        ".flywheel.cx",
        "api.flywheel.cx",
        "x.org, flywheel.cx",
        "api.flywheel.cx:443",
    ):
        assert proxy_for(api.with_port(443), {**env, "NO_PROXY": no}) is None, no
    assert proxy_for(api, {**env, "NO_PROXY": "theflywheel.cx,api.flywheel.cx:8443"}) is not None
    for host in ("127.0.0.1", "localhost", "[::1]", "127.9.9.9"):
        assert proxy_for(yarl.URL(f"http://{host}:8080"), env) is None, host


def test_lower_case_proxy_variables_win_and_an_empty_one_turns_the_proxy_off() -> None:
    assert env_proxies({"HTTPS_PROXY": "http://a:1", "https_proxy": "http://b:2"}) == {
        "https": "http://b:2"
    }
    assert env_proxies({"HTTPS_PROXY": "http://a:1", "https_proxy": ""}) == {}
    assert env_proxies({"HTTP_PROXY": "http://a:1", "REQUEST_METHOD": "GET"}) == {}


def test_no_proxy_matches_domains_addresses_and_blocks() -> None:
    assert no_proxy_covers("10.0.0.0/8", "10.1.2.3")
    assert no_proxy_covers("::1, fd00::/8", "fd12::5")
    assert no_proxy_covers("192.168.1.7", "192.168.1.7")
    assert not no_proxy_covers("10.0.0.0/8", "11.0.0.1")
    assert not no_proxy_covers("example.com", "notexample.com")
    assert not no_proxy_covers("", "example.com")


def test_an_https_proxy_url_is_a_usage_error_without_its_credentials() -> None:
    with pytest.raises(UsageError) as err:
        proxy_for(
            yarl.URL("https://api.flywheel.cx"), {"HTTPS_PROXY": "https://u:Zq9-secret@p:3129"}
        )
    assert str(err.value) == (
        "HTTPS_PROXY must be an http://host:port proxy URL, got 'https://***@p:3129'"
    )

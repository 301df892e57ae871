"""The embeddable Sandbox, the batched writer, and the sandbox's independence from the importer."""

from __future__ import annotations

import ast
import asyncio
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox_fixtures import KEY, post_event

import flywheel_import.sandbox as sandbox_package
from flywheel_import.errors import UsageError
from flywheel_import.sandbox import Sandbox
from flywheel_import.sandbox.store import EventStore
from flywheel_import.sandbox.writer import MAX_PENDING, BatchWriter


def test_url_key_and_db_path_are_exposed(tmp_path: Path) -> None:
    with Sandbox(key="k1", db=tmp_path / "x.db") as sb:
        assert sb.url.startswith("http://127.0.0.1:")
        assert int(sb.url.rsplit(":", 1)[1]) > 0
        assert sb.key == "k1"
        assert sb.db_path == tmp_path / "x.db"
        assert sb.db_path.exists()


def test_many_sandboxes_run_side_by_side() -> None:
    with Sandbox(key=KEY) as a, Sandbox(key=KEY) as b:
        assert a.url != b.url
        post_event(a.url, {"event": "only_a"})
        assert (a.stats()["stored"], b.stats()["stored"]) == (1, 0)


def test_stopped_server_refuses_connections() -> None:
    with Sandbox(key=KEY) as sb:
        url = sb.url
    with pytest.raises(ConnectionError):
        post_event(url, {"event": "late"})


def test_url_before_start_and_double_start_are_errors() -> None:
    sb = Sandbox(key=KEY)
    with pytest.raises(RuntimeError):
        _ = sb.url
    with sb, pytest.raises(RuntimeError):
        sb.start()


def test_busy_port_fails_at_start() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError):
            Sandbox(key=KEY, port=port).start()


def test_invalid_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--drop-rate"):
        Sandbox(drop_rate=-0.1)


def test_writer_flushes_early_when_many_events_are_pending(tmp_path: Path) -> None:
    db = tmp_path / "w.db"

    async def fill() -> int:
        writer = BatchWriter(EventStore(db), interval=3600)
        writer.start()
        for i in range(MAX_PENDING + 10):
            assert writer.add(f"id{i}", False, b'{"event":{"event":"e"}}')
        assert not writer.add("id0", False, b"{}")
        early = 0
        for _ in range(500):  # the early flush runs in the writer thread; poll, don't guess
            await asyncio.sleep(0.01)
            with sqlite3.connect(db) as conn:
                early = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            if early:
                break
        await writer.close()
        return early

    assert asyncio.run(fill()) >= MAX_PENDING
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == MAX_PENDING + 10


def test_sandbox_imports_nothing_of_the_importer_but_errors() -> None:
    package_dir = Path(sandbox_package.__file__).parent
    offenders = []
    for path in package_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                name = node.module
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                name = f"flywheel_import.{node.module or node.names[0].name}"
            elif isinstance(node, ast.Import):
                name = node.names[0].name
            else:
                continue
            top = name.split(".")[:2]
            if top[0] == "flywheel_import" and top != ["flywheel_import", "errors"]:
                if name.startswith("flywheel_import.sandbox"):
                    continue
                offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_stop_finishes_answers_in_progress(tmp_path: Path) -> None:
    db = tmp_path / "inflight.db"
    with ThreadPoolExecutor(1) as pool:
        with Sandbox(key=KEY, db=db, latency_ms=300) as sb:
            pending = pool.submit(post_event, sb.url, {"event": "e", "event_id": "late"})
            deadline = time.monotonic() + 5
            while sb.stats()["requests"] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
        # the with block has exited: the sandbox stopped while the answer was delayed
        assert pending.result(5).status == 200
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT event_id FROM events")] == ["late"]

"""Storage: dedupe by event_id, generated ids, stats, paging, durability across restarts."""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_fixtures import KEY, get_json, post_event, request
from sandbox_fixtures import sandbox as sandbox  # pytest fixture

from flywheel_import.sandbox import Sandbox


def stored_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT event_id, body FROM events ORDER BY seq"))


def test_same_event_id_is_acknowledged_twice_but_stored_once(sandbox: Sandbox) -> None:
    first = post_event(sandbox.url, {"event": "a", "event_id": "dup", "user_id": "u1"})
    second = post_event(sandbox.url, {"event": "b", "event_id": "dup", "user_id": "u2"})
    assert first.status == second.status == 200
    assert first.raw == second.raw
    events = sandbox.events()
    assert len(events) == 1
    assert events[0]["body"]["event"]["event"] == "a"  # the first one is kept
    stats = sandbox.stats()
    assert (stats["stored"], stats["duplicates"], stats["accepted_200"]) == (1, 1, 2)


def test_invalid_event_does_not_claim_its_event_id(sandbox: Sandbox) -> None:
    assert post_event(sandbox.url, {"event": "bad name", "event_id": "e1"}).status == 400
    assert post_event(sandbox.url, {"event": "good", "event_id": "e1"}).status == 200
    assert [e["body"]["event"]["event"] for e in sandbox.events()] == ["good"]


def test_event_without_id_gets_a_generated_uuid(sandbox: Sandbox) -> None:
    post_event(sandbox.url, {"event": "a"})
    post_event(sandbox.url, {"event": "a"})
    post_event(sandbox.url, {"event": "a", "event_id": "given"})
    events = sandbox.events()
    assert len(events) == 3  # identical bodies without ids are distinct events
    generated = [e for e in events if e["generated_id"]]
    assert len(generated) == 2
    for event in generated:
        assert uuid.UUID(event["event_id"]).version == 4
        assert "event_id" not in event["body"]["event"]
    assert events[2]["event_id"] == "given" and not events[2]["generated_id"]


def test_stats_count_every_outcome(sandbox: Sandbox) -> None:
    post_event(sandbox.url, {"event": "a", "event_id": "1"})
    post_event(sandbox.url, {"event": "a", "event_id": "1"})
    post_event(sandbox.url, {"event": "a", "event_id": "2"})
    post_event(sandbox.url, {"event": "bad name"})
    post_event(sandbox.url, {"event": "a"}, key="wrong")
    request(sandbox.url, "GET", "/nowhere")
    request(sandbox.url, "GET", "/v1/events")
    stats = get_json(sandbox.url, "/sandbox/stats")
    assert stats == sandbox.stats()
    assert stats == {
        "requests": 5,
        "accepted_200": 3,
        "stored": 2,
        "duplicates": 1,
        "stored_total": 2,
        "rejected_400": 1,
        "rejected_400_by_reason": {"event.event": 1},
        "unauthorized_401": 1,
        "unsupported_media_type_415": 0,
        "throttled_429": 0,
        "faults": {
            "500": 0,
            "503": 0,
            "dropped": 0,
            "429": 0,
            "400": 0,
            "stored_lost": 0,
            "slow": 0,
        },
        "not_found_404": 1,
        "method_not_allowed_405": 1,
        "malformed_http": 0,
        "connections": 8,  # one per request above, the stats read included
    }


def test_events_are_paged_in_arrival_order(sandbox: Sandbox) -> None:
    for i in range(5):
        post_event(sandbox.url, {"event": "e", "event_id": f"id{i}"})
    page1 = get_json(sandbox.url, "/sandbox/events?limit=2")
    assert [e["event_id"] for e in page1["events"]] == ["id0", "id1"]
    page2 = get_json(sandbox.url, f"/sandbox/events?limit=2&after={page1['next_after']}")
    assert [e["event_id"] for e in page2["events"]] == ["id2", "id3"]
    page3 = get_json(sandbox.url, f"/sandbox/events?limit=2&after={page2['next_after']}")
    assert [e["event_id"] for e in page3["events"]] == ["id4"]
    assert page3["next_after"] is None
    exact = get_json(sandbox.url, "/sandbox/events?limit=5")
    assert exact["next_after"] is None and len(exact["events"]) == 5
    everything = get_json(sandbox.url, "/sandbox/events")
    assert everything["events"] == sandbox.events()
    first = everything["events"][0]
    assert set(first) == {"seq", "event_id", "generated_id", "received_at", "body"}
    assert first["received_at"].endswith("Z")
    assert first["body"] == {"event": {"event": "e", "event_id": "id0"}}


def test_events_paging_rejects_bad_parameters(sandbox: Sandbox) -> None:
    for query in ("limit=0", "limit=x", "after=-1", "limit=100000"):
        answer = request(sandbox.url, "GET", f"/sandbox/events?{query}")
        assert answer.status == 400, query
        assert answer.json["code"] == "INVALID_QUERY"


def test_inspection_reflects_events_not_yet_flushed(tmp_path: Path) -> None:
    with Sandbox(key=KEY, db=tmp_path / "e.db", flush_interval=60) as sb:
        for i in range(3):
            post_event(sb.url, {"event": "e", "event_id": f"p{i}"})
        assert len(get_json(sb.url, "/sandbox/events")["events"]) == 3
        assert sb.stats()["stored"] == 3


def test_clean_stop_flushes_every_acknowledged_event(tmp_path: Path) -> None:
    db = tmp_path / "flush.db"
    with Sandbox(key=KEY, db=db, flush_interval=60) as sb:
        for i in range(50):
            assert post_event(sb.url, {"event": "e", "event_id": f"f{i}"}).status == 200
    assert [row[0] for row in stored_rows(db)] == [f"f{i}" for i in range(50)]


def test_restart_on_the_same_db_keeps_events_and_dedupe(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    with Sandbox(key=KEY, db=db) as sb:
        post_event(sb.url, {"event": "e", "event_id": "r1"})
        post_event(sb.url, {"event": "e", "event_id": "r2"})
    with Sandbox(key=KEY, db=db) as sb:
        assert post_event(sb.url, {"event": "e", "event_id": "r1"}).status == 200
        assert post_event(sb.url, {"event": "e", "event_id": "r3"}).status == 200
        stats = sb.stats()
        assert (stats["stored"], stats["duplicates"], stats["stored_total"]) == (1, 1, 3)
        assert [e["event_id"] for e in sb.events()] == ["r1", "r2", "r3"]
        assert [e["seq"] for e in sb.events()] == [1, 2, 3]
    assert len(stored_rows(db)) == 3


def test_stats_and_events_stay_readable_after_stop(tmp_path: Path) -> None:
    with Sandbox(key=KEY, db=tmp_path / "after.db") as sb:
        post_event(sb.url, {"event": "e", "event_id": "a1"})
    assert sb.stats()["stored"] == 1
    assert [e["event_id"] for e in sb.events()] == ["a1"]


def test_temporary_db_is_removed_on_exit() -> None:
    with Sandbox(key=KEY) as sb:
        post_event(sb.url, {"event": "e"})
        db = sb.db_path
        assert db.exists()
    assert not db.parent.exists()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask, under which files are created world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(folder: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}


@pytest.mark.usefixtures("loose_umask")
def test_db_and_its_wal_and_shm_files_are_created_owner_only(tmp_path: Path) -> None:
    with Sandbox(key=KEY, db=tmp_path / "private.db") as sb:
        post_event(sb.url, {"event": "e", "event_id": "m1"})
        assert len(sb.events()) == 1  # flushed: the WAL holds a commit
        seen = modes(tmp_path)
    assert seen == {"private.db": 0o600, "private.db-wal": 0o600, "private.db-shm": 0o600}


@pytest.mark.usefixtures("loose_umask")
def test_temporary_db_is_created_owner_only_in_an_owner_only_folder() -> None:
    with Sandbox(key=KEY) as sb:
        post_event(sb.url, {"event": "e", "event_id": "t1"})
        assert len(sb.events()) == 1
        folder = sb.db_path.parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert set(modes(folder).values()) == {0o600}
        assert len(modes(folder)) == 3


def test_an_existing_db_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with Sandbox(key=KEY, db=db):
        pass
    db.chmod(0o640)
    with Sandbox(key=KEY, db=db):
        pass
    assert stat.S_IMODE(db.stat().st_mode) == 0o640

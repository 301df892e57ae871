"""Known layouts of other tools' raw exports and warehouse tables.

Each preset names, in order of preference, the columns that hold the event name, the ids, the
time and the event id in that tool's export, and its columns of JSON objects. Columns nested
in an NDJSON object are named as the reader flattens them (``properties.distinct_id``).

Sources, as documented by each tool:

- Mixpanel raw event export (``GET /api/2.0/export``, docs.mixpanel.com/reference/raw-event-export
  and /docs/export-methods): JSONL, one ``{"event": ..., "properties": {"time": <epoch s>,
  "distinct_id": ..., "$insert_id": ..., ...}}`` per line. (The import API takes ``time`` in
  ms: the unit is read from the magnitude either way.)
- Amplitude Export API (amplitude.com/docs/apis/analytics/export): zipped JSON lines with
  ``event_type``, ``user_id``, ``device_id``, ``event_time`` (UTC, ISO-8601 text without an
  offset), ``$insert_id``, ``uuid``, ``event_properties`` and ``user_properties`` (objects; JSON
  text once loaded into a warehouse or CSV).
- Segment warehouse ``<source>.tracks`` table (segment.com/docs/connections/storage/warehouses/
  schema): ``id`` (the messageId), ``event``, ``event_text``, ``user_id``, ``anonymous_id``,
  ``timestamp``, ``received_at``, ``sent_at``, ``context_*`` columns.
- PostHog ``events`` table (posthog.com/docs/data-warehouse/sources/posthog and
  /docs/data-model): ``uuid``, ``event``, ``distinct_id``, ``timestamp`` (ISO 8601),
  ``properties`` (a JSON object stored as text), ``person_id``, ``session_id``.
- Snowplow atomic events (docs.snowplow.io/docs/fundamentals/canonical-event): ``event_id``
  (UUID), ``event`` (the type), ``event_name``, ``se_category``/``se_action`` (structured
  events), ``user_id``, ``domain_userid`` (the first-party cookie id), ``derived_tstamp``,
  ``collector_tstamp``, ``dvce_created_tstamp`` (UTC, no offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    what: str
    event: tuple[str, ...]
    user_id: tuple[str, ...]
    anonymous_id: tuple[str, ...]
    timestamp: tuple[str, ...]
    event_id: tuple[str, ...]
    #: JSON-object columns and the prefix their keys get.
    json: dict[str, str] = field(default_factory=dict)
    #: Columns whose presence together says "this is that tool's export".
    signature: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "mixpanel",
            "Mixpanel raw event export (NDJSON)",
            event=("event",),
            user_id=("properties.distinct_id", "distinct_id"),
            anonymous_id=("properties.$device_id", "$device_id"),
            timestamp=("properties.time", "time"),
            event_id=("properties.$insert_id", "$insert_id"),
            signature=("event", "properties.distinct_id", "properties.time"),
        ),
        Preset(
            "amplitude",
            "Amplitude Export API events",
            event=("event_type",),
            user_id=("user_id",),
            anonymous_id=("device_id",),
            timestamp=("event_time", "client_event_time", "server_upload_time"),
            event_id=("$insert_id", "insert_id", "uuid"),
            json={"event_properties": "", "user_properties": "user."},
            signature=("event_type", "device_id", "event_time"),
        ),
        Preset(
            "segment",
            "Segment warehouse tracks table",
            event=("event", "event_text"),
            user_id=("user_id",),
            anonymous_id=("anonymous_id",),
            timestamp=("timestamp", "original_timestamp", "sent_at", "received_at"),
            event_id=("id", "message_id"),
            signature=("event", "anonymous_id", "received_at"),
        ),
        Preset(
            "posthog",
            "PostHog events table",
            event=("event",),
            user_id=("distinct_id",),
            anonymous_id=(),
            timestamp=("timestamp",),
            event_id=("uuid",),
            json={"properties": ""},
            signature=("event", "distinct_id", "uuid", "properties"),
        ),
        Preset(
            "snowplow",
            "Snowplow atomic events",
            event=("event_name", "se_action", "event"),
            user_id=("user_id",),
            anonymous_id=("domain_userid", "network_userid"),
            timestamp=("derived_tstamp", "collector_tstamp", "dvce_created_tstamp"),
            event_id=("event_id",),
            signature=("event_id", "domain_userid", "collector_tstamp"),
        ),
    )
}


def detect_preset(columns: list[str]) -> Preset | None:
    """The preset whose signature columns are all present (the one with the most, if several)."""
    have = set(columns)
    fits = [p for p in PRESETS.values() if set(p.signature) <= have]
    return max(fits, key=lambda p: len(p.signature), default=None)

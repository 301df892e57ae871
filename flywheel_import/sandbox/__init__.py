"""A local Flywheel-compatible events API: the server behind the tests, and a rehearsal target.

Its request rules are written from the published spec on their own (see :mod:`.rules`), never
imported from the importer, so a misreading of the spec on either side shows up as a
disagreement. :class:`Sandbox` embeds it; ``python -m flywheel_import.sandbox`` runs it; either
serves plain http or, given a certificate and key, https (:mod:`.tls`).

Routes:

* ``POST /v1/events`` -- the API. Order of checks and fault semantics: :mod:`.app`.
* ``GET /sandbox/stats`` -- counters (:mod:`.stats`).
* ``GET /sandbox/events?limit=100&after=0`` -- stored events in arrival order,
  ``{"events": [{"seq", "event_id", "generated_id", "received_at", "body"}], "next_after"}``;
  pass ``next_after`` back as ``after`` until it is null. ``limit`` is 1..10000.

The inspection routes need no key and are never faulted, delayed or counted. Choices the spec
leaves open: unknown fields are rejected (400); a Content-Type other than ``application/json``
is a 415; chunked request bodies are accepted; bodies are limited to 1 MiB (413).
"""

from .config import DEFAULT_KEY, SandboxConfig
from .embed import Sandbox

__all__ = ["DEFAULT_KEY", "Sandbox", "SandboxConfig"]

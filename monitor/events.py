"""Detection and infringement events: their JSON (topics ``detections.v1``, ``infringements.v1``) and their rows.

Event JSON (one object per Kafka message, key = stream id):

``detections.v1``::

    {"schema": "castwatch.detection.v1", "event": "play.started" | "play.ended",
     "event_id": "<uuid: stream, track, play start>", "stream_id": "fm-1",
     "track_id": 42, "title": "...", "artist": "...", "isrc": "..." | null,
     "started_at": "2026-06-01T20:00:03.120Z", "ended_at": null | "...",
     "ref_start_s": 12.0, "ref_end_s": 14.9, "score": 0.41, "speed": 1.021,
     "licensed": false, "licence_reason": "...",
     "detected_at": "2026-06-01T20:00:07.000Z"}

``detected_at`` is the stream time of the audio that completed the evidence
for this event (for ``play.started``: ``detected_at - started_at`` is the
detection latency in stream time).

``event_id`` is made from the start ``play.started`` reported. ``play.ended``
reports the play's final figures under the same ``event_id``, and they can
differ from the announcement's: the reference range and speed when the
play was found on another occurrence of a passage its recording repeats
and moved onto its true timeline, and then the start too when the audio
before that passage turned out to belong to the play (it began earlier than
announced).

``infringements.v1``: the same fields for a play that is not licensed, with
``"schema": "castwatch.infringement.v1"``, emitted once per play (on
``play.started``) and again with the final figures on ``play.ended``.
Consumers de-duplicate on (``event_id``, ``event``); ``ended`` supersedes
``started``.

The same plays are upserted into PostgreSQL (``detections``, and
``infringements`` for unlicensed plays) keyed by ``event_id``, so replays
after a crash update rows instead of adding them (with the latest figures,
start and reference range included), and a row never goes back from
``ended`` to ``started``.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg.types.json import Jsonb

from monitor.rights.db import Reconnecting
from monitor.rights.licences import Decision
from monitor.tracker import ENDED, PlayEvent

log = logging.getLogger(__name__)

DETECTION_SCHEMA = "castwatch.detection.v1"
INFRINGEMENT_SCHEMA = "castwatch.infringement.v1"


def iso_utc(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds and a Z, as in the event JSON."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Recording:
    title: str
    artist: str
    isrc: str | None


@dataclass(frozen=True)
class Outgoing:
    """One play event, decided: what to publish and what to store."""

    event: PlayEvent
    decision: Decision
    recording: Recording
    detected_at: float  # stream time (s since epoch) of the audio that completed the evidence

    @property
    def track_id(self) -> int:
        return int(self.event.play.track)

    def as_json(self, schema: str = DETECTION_SCHEMA) -> dict[str, object]:
        play = self.event.play
        return {
            "schema": schema,
            "event": self.event.kind,
            "event_id": play.event_id,
            "stream_id": play.stream,
            "track_id": self.track_id,
            "title": self.recording.title,
            "artist": self.recording.artist,
            "isrc": self.recording.isrc,
            "started_at": iso_utc(play.start),
            "ended_at": iso_utc(play.last_seen) if self.event.kind == ENDED else None,
            "ref_start_s": round(play.ref_start, 3),
            "ref_end_s": round(play.ref_end, 3),
            "score": round(play.score, 4),
            "speed": round(play.speed, 4),
            "licensed": self.decision.licensed,
            "licence_reason": self.decision.reason,
            "detected_at": iso_utc(self.detected_at),
        }

    def messages(self) -> list[tuple[str, bytes, bytes]]:
        """(topic, key, value) to publish for this event."""
        key = self.event.play.stream.encode()
        out = [("detections.v1", key, json.dumps(self.as_json()).encode())]
        if not self.decision.licensed:
            out.append(("infringements.v1", key, json.dumps(self.as_json(INFRINGEMENT_SCHEMA)).encode()))
        return out


_UPSERT_DETECTION = """
INSERT INTO detections (event_id, stream_id, track_id, started_at, ended_at, ref_start_s, ref_end_s,
                        score, speed, licensed, state)
VALUES (%(event_id)s, %(stream_id)s, %(track_id)s, to_timestamp(%(started_at)s), to_timestamp(%(ended_at)s),
        %(ref_start_s)s, %(ref_end_s)s, %(score)s, %(speed)s, %(licensed)s, %(state)s)
ON CONFLICT (event_id) DO UPDATE SET
    started_at = CASE WHEN detections.state = 'ended' AND EXCLUDED.state = 'started'
                      THEN detections.started_at ELSE EXCLUDED.started_at END,
    ended_at = coalesce(EXCLUDED.ended_at, detections.ended_at),
    ref_start_s = CASE WHEN detections.state = 'ended' AND EXCLUDED.state = 'started'
                       THEN detections.ref_start_s ELSE EXCLUDED.ref_start_s END,
    ref_end_s = CASE WHEN detections.state = 'ended' AND EXCLUDED.state = 'started'
                     THEN detections.ref_end_s ELSE EXCLUDED.ref_end_s END,
    score = greatest(detections.score, EXCLUDED.score),
    speed = CASE WHEN detections.state = 'ended' AND EXCLUDED.state = 'started'
                 THEN detections.speed ELSE EXCLUDED.speed END,
    state = CASE WHEN detections.state = 'ended' THEN 'ended' ELSE EXCLUDED.state END,
    updated_at = now()
"""

_INSERT_INFRINGEMENT = """
INSERT INTO infringements (detection_id) VALUES (%s) ON CONFLICT (detection_id) DO NOTHING
"""


_UPSERT_STATE = """
INSERT INTO stream_state (stream_id, state) VALUES (%s, %s)
ON CONFLICT (stream_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()
"""


def store(conn: psycopg.Connection, outgoing: list[Outgoing], state: tuple[str, dict[str, object]] | None = None) -> None:
    """Upsert the plays and the stream's state (one transaction): idempotent, so replays are harmless."""
    if not outgoing and state is None:
        return
    rows = []
    for o in outgoing:
        play = o.event.play
        rows.append(
            {
                "event_id": uuid.UUID(play.event_id),
                "stream_id": play.stream,
                "track_id": o.track_id,
                "started_at": play.start,
                "ended_at": play.last_seen if o.event.kind == ENDED else None,
                "ref_start_s": play.ref_start,
                "ref_end_s": play.ref_end,
                "score": play.score,
                "speed": play.speed,
                "licensed": o.decision.licensed,
                "state": "ended" if o.event.kind == ENDED else "started",
            }
        )
    with conn.transaction(), conn.cursor() as cur:
        if rows:
            cur.executemany(_UPSERT_DETECTION, rows)
        unlicensed = [(r["event_id"],) for r in rows if not r["licensed"]]
        if unlicensed:
            cur.executemany(_INSERT_INFRINGEMENT, unlicensed)
        if state is not None:
            cur.execute(_UPSERT_STATE, (state[0], Jsonb(state[1])))


class DurableStore:
    """``store`` that waits out database outages (see ``Reconnecting``).

    The worker must not commit a chunk's offset before its events are
    durable, so there is no giving up: an outage stalls the stream (lag
    grows, the metrics and alerts show it) and nothing is lost.
    """

    def __init__(self, url: str) -> None:
        self._db = Reconnecting(url, "castwatch-worker")

    @property
    def failures(self) -> int:
        return self._db.failures

    def write(self, outgoing: list[Outgoing], state: tuple[str, dict[str, object]] | None = None) -> None:
        self._db.run(f"storing {len(outgoing)} events", lambda conn: store(conn, outgoing, state))

    def saved_state(self, stream: str) -> dict[str, object] | None:
        """The stream's persisted worker state (``None`` for a new stream)."""

        def read(conn: psycopg.Connection) -> dict[str, object] | None:
            row = conn.execute("SELECT state FROM stream_state WHERE stream_id = %s", (stream,)).fetchone()
            conn.commit()
            return row[0] if row else None

        return self._db.run(f"reading the state of stream {stream}", read)

    def close(self) -> None:
        self._db.close()

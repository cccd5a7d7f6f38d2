"""What the dashboard shows, read from PostgreSQL in one query per view, and its one write.

Stream liveness comes from ``stream_state``, which the worker saves every
10 s of a stream's audio and with every play event (``monitor/worker.py``):
``updated_at`` is when it last processed that stream's audio (database
clock) and ``state->'end_s'`` the capture time of the end of that audio.

- **waiting**: registered (``castwatch streams add``) but no audio processed yet;
- **silent for N s**: no audio processed for ``N = now - updated_at`` >
  ``SILENT_AFTER_S`` (the capture is down, the station is off air, or no
  worker handles the stream);
- **lagging N s**: audio still flows, but what was processed last had been
  captured ``N = updated_at - end_s`` > ``LAGGING_AFTER_S`` before it was
  processed (the workers fall behind; consumer lag grows);
- **live** otherwise.

"Now playing" is a stream's latest detection still in state ``started``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from monitor.events import iso_utc

SILENT_AFTER_S = 25.0  # more than two missed state saves (workers save every 10 s of audio)
LAGGING_AFTER_S = 30.0
MAX_STREAMS = 5000
RECENT_DETECTIONS = 50
UNRESOLVED_SHOWN = 100
HOURS = 24
MAX_OPERATOR = 100
MAX_NOTE = 1000

ACTIONS = {"acknowledge": ("acknowledged", ("open",)), "resolve": ("resolved", ("open", "acknowledged"))}


@dataclass(frozen=True)
class Liveness:
    state: str  # live, lagging, silent or waiting
    seconds: float | None  # silent: since audio was last processed; lagging and live: how far behind capture


def liveness(now: float, saved_at: float | None, end_s: float | None) -> Liveness:
    """A stream's state from its last state save (``saved_at``) and the stream time it had reached (``end_s``)."""
    if saved_at is None or end_s is None:
        return Liveness("waiting", None)
    quiet = now - saved_at
    if quiet > SILENT_AFTER_S:
        return Liveness("silent", quiet)
    behind = max(saved_at - end_s, 0.0)
    return Liveness("lagging" if behind > LAGGING_AFTER_S else "live", behind)


class ActionError(ValueError):
    """An acknowledge or resolve request that cannot be carried out; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_STREAMS = f"""
WITH ids AS (SELECT id AS stream_id FROM streams UNION SELECT stream_id FROM stream_state)
SELECT ids.stream_id, s.name, s.licensee, s.territory,
       extract(epoch FROM st.updated_at)::float8 AS saved_at, (st.state ->> 'end_s')::float8 AS end_s,
       p.track_id, t.title, t.artist, p.started_at, p.licensed, p.score
FROM ids
LEFT JOIN streams s ON s.id = ids.stream_id
LEFT JOIN stream_state st ON st.stream_id = ids.stream_id
LEFT JOIN LATERAL (
    SELECT d.track_id, extract(epoch FROM d.started_at)::float8 AS started_at, d.licensed, d.score
    FROM detections d WHERE d.stream_id = ids.stream_id AND d.state = 'started'
    ORDER BY d.started_at DESC LIMIT 1
) p ON true
LEFT JOIN tracks t ON t.id = p.track_id
ORDER BY ids.stream_id
LIMIT {MAX_STREAMS + 1}
"""

_PLAY_COLUMNS = """
d.event_id::text AS event_id, d.stream_id, d.track_id, t.title, t.artist, t.isrc,
extract(epoch FROM d.started_at)::float8 AS started_at, extract(epoch FROM d.ended_at)::float8 AS ended_at,
d.ref_start_s, d.ref_end_s, d.score, d.speed, d.licensed, d.state
"""

_RECENT = f"""
SELECT {_PLAY_COLUMNS}
FROM detections d JOIN tracks t ON t.id = d.track_id
ORDER BY d.started_at DESC, d.event_id LIMIT {RECENT_DETECTIONS}
"""

_UNRESOLVED = f"""
SELECT {_PLAY_COLUMNS}, i.status, i.note, i.updated_by,
       extract(epoch FROM i.created_at)::float8 AS created_at, extract(epoch FROM i.updated_at)::float8 AS updated_at,
       s.name AS stream_name,
       (SELECT string_agg(DISTINCT h.name, ', ' ORDER BY h.name)
        FROM ownership o JOIN holders h ON h.id = o.holder_id WHERE o.track_id = d.track_id) AS holders
FROM (SELECT * FROM infringements WHERE status <> 'resolved'
      ORDER BY created_at DESC, detection_id DESC LIMIT {UNRESOLVED_SHOWN}) i
JOIN detections d ON d.event_id = i.detection_id
JOIN tracks t ON t.id = d.track_id
LEFT JOIN streams s ON s.id = d.stream_id
ORDER BY i.created_at DESC, i.detection_id DESC
"""

_TOTALS = """
SELECT extract(epoch FROM now())::float8 AS now,
       (SELECT count(*) FROM infringements WHERE status = 'open') AS open,
       (SELECT count(*) FROM infringements WHERE status = 'acknowledged') AS acknowledged
"""

_HOURLY = f"""
SELECT extract(epoch FROM h)::float8 AS hour, count(d.event_id) AS plays, count(i.detection_id) AS infringements
FROM generate_series(date_trunc('hour', now()) - interval '{HOURS - 1} hours', date_trunc('hour', now()),
                     interval '1 hour') AS h
LEFT JOIN detections d ON d.started_at >= h AND d.started_at < h + interval '1 hour'
LEFT JOIN infringements i ON i.detection_id = d.event_id
GROUP BY h ORDER BY h
"""


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso_utc(seconds)


def _play(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": row["event_id"],
        "stream_id": row["stream_id"],
        "track_id": row["track_id"],
        "title": row["title"],
        "artist": row["artist"],
        "isrc": row["isrc"],
        "started_at": _iso(row["started_at"]),
        "ended_at": _iso(row["ended_at"]),
        "ref_start_s": round(row["ref_start_s"], 3),
        "ref_end_s": None if row["ref_end_s"] is None else round(row["ref_end_s"], 3),
        "score": round(row["score"], 4),
        "speed": round(row["speed"], 4),
        "licensed": row["licensed"],
        "state": row["state"],
    }


def _stream(row: dict[str, Any], now: float) -> dict[str, Any]:
    live = liveness(now, row["saved_at"], row["end_s"])
    playing = None
    if row["track_id"] is not None:
        playing = {
            "track_id": row["track_id"],
            "title": row["title"],
            "artist": row["artist"],
            "started_at": _iso(row["started_at"]),
            "licensed": row["licensed"],
            "score": round(row["score"], 4),
        }
    return {
        "id": row["stream_id"],
        "name": row["name"],
        "registered": row["name"] is not None,
        "licensee": row["licensee"],
        "territory": row["territory"],
        "state": live.state,
        "state_seconds": None if live.seconds is None else round(live.seconds, 1),
        "last_audio_at": _iso(row["saved_at"]),
        "stream_time": _iso(row["end_s"]),
        "playing": playing,
    }


async def overview(conn: psycopg.AsyncConnection) -> dict[str, Any]:
    """Everything the page shows, as JSON-able data (five queries, none per stream or per row)."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SET TRANSACTION READ ONLY")
        await cur.execute(_TOTALS)
        totals = await cur.fetchone()
        assert totals is not None
        await cur.execute(_STREAMS)
        streams = await cur.fetchall()
        await cur.execute(_RECENT)
        recent = await cur.fetchall()
        await cur.execute(_UNRESOLVED)
        unresolved = await cur.fetchall()
        await cur.execute(_HOURLY)
        hourly = await cur.fetchall()
    now = totals["now"]
    shown = [_stream(r, now) for r in streams[:MAX_STREAMS]]
    states = {s: 0 for s in ("live", "lagging", "silent", "waiting")}
    for s in shown:
        states[s["state"]] += 1
    infringements = []
    for row in unresolved:
        item = _play(row)
        item.update(
            status=row["status"],
            note=row["note"],
            updated_by=row["updated_by"],
            created_at=_iso(row["created_at"]),
            updated_at=_iso(row["updated_at"]),
            stream_name=row["stream_name"],
            holders=row["holders"] or "",
        )
        infringements.append(item)
    return {
        "now": _iso(now),
        "thresholds": {"silent_after_s": SILENT_AFTER_S, "lagging_after_s": LAGGING_AFTER_S},
        "counts": {
            "streams": len(shown),
            **states,
            "open": totals["open"],
            "acknowledged": totals["acknowledged"],
        },
        "streams": shown,
        "streams_truncated": len(streams) > MAX_STREAMS,
        "recent": [_play(r) for r in recent],
        "infringements": infringements,
        "hourly": [{"hour": _iso(r["hour"]), "plays": r["plays"], "infringements": r["infringements"]} for r in hourly],
    }


def check_action(detection_id: str, action: str, operator: str, note: str) -> tuple[uuid.UUID, str, str]:
    """The request's id, operator and note, checked; ``ActionError`` says what is wrong."""
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}", 404)
    try:
        parsed = uuid.UUID(detection_id)
    except ValueError as e:
        raise ActionError(f"{detection_id!r} is not an infringement id (a UUID)", 404) from e
    operator = operator.strip()
    if not operator:
        raise ActionError("say who you are: an operator name (form field 'operator' or header X-Castwatch-Operator)")
    if len(operator) > MAX_OPERATOR or not operator.isprintable():
        raise ActionError(f"operator name: at most {MAX_OPERATOR} printable characters")
    if len(note) > MAX_NOTE:
        raise ActionError(f"note: at most {MAX_NOTE} characters (found {len(note)})")
    return parsed, operator, note.strip()


async def act(conn: psycopg.AsyncConnection, detection_id: uuid.UUID, action: str, operator: str, note: str) -> dict[str, Any]:
    """Acknowledge or resolve an infringement and log who did it, when, in one transaction."""
    status, allowed_from = ACTIONS[action]
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """UPDATE infringements
               SET status = %(status)s, note = CASE WHEN %(note)s = '' THEN note ELSE %(note)s END,
                   updated_by = %(operator)s, updated_at = now()
               WHERE detection_id = %(id)s AND status = ANY(%(allowed)s)
               RETURNING status, note, updated_by, extract(epoch FROM updated_at)::float8 AS updated_at""",
            {"status": status, "note": note, "operator": operator, "id": detection_id, "allowed": list(allowed_from)},
        )
        row = await cur.fetchone()
        if row is None:
            await cur.execute("SELECT status FROM infringements WHERE detection_id = %s", (detection_id,))
            found = await cur.fetchone()
            if found is None:
                raise ActionError(f"no infringement {detection_id}", 404)
            raise ActionError(f"infringement {detection_id} is {found['status']}: it cannot be {status} now", 409)
        await cur.execute(
            "INSERT INTO infringement_actions (detection_id, action, operator, note) VALUES (%s, %s, %s, %s)",
            (detection_id, action, operator, note),
        )
    return {
        "event_id": str(detection_id),
        "status": row["status"],
        "note": row["note"],
        "updated_by": row["updated_by"],
        "updated_at": _iso(row["updated_at"]),
    }

"""monitor.events: event JSON and idempotent storage of plays (real PostgreSQL)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from monitor.events import Outgoing, Recording, store
from monitor.rights import catalog
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.licences import Decision, Stream, add_stream
from monitor.tracker import ENDED, STARTED, Play, PlayEvent

T0 = 1_780_000_000.0


@pytest.fixture
def track(conn: psycopg.Connection, recordings: list[Path]) -> int:
    ((_, track_id),) = catalog.add(conn, recordings[:1], {}, TrackMeta(owners=(Owner("Acme"),))).added
    add_stream(conn, Stream("fm", "FM", "FM Ltd", "FR"))
    return track_id


def outgoing(track: int, kind: str, last_seen: float, licensed: bool = False) -> Outgoing:
    play = Play("fm", str(track), T0, last_seen, 10.0, 10.0 + (last_seen - T0) * 1.02, 1.02, 0.4, 50, 3, True)
    return Outgoing(PlayEvent(kind, play), Decision(licensed, "why"), Recording("Song", "Band", "USABC2600001"), play.last_seen + 1.5)


def rows(conn: psycopg.Connection) -> list[tuple]:
    out = conn.execute(
        "SELECT state, extract(epoch FROM ended_at), ref_end_s, (SELECT count(*) FROM infringements) FROM detections"
    ).fetchall()
    conn.commit()
    return out


def test_json_of_a_detection_and_an_infringement(track: int) -> None:
    o = outgoing(track, ENDED, T0 + 30)
    messages = o.messages()
    assert [m[0] for m in messages] == ["detections.v1", "infringements.v1"] and messages[0][1] == b"fm"
    body = json.loads(messages[0][2])
    assert body["event"] == ENDED and body["event_id"] == o.event.play.event_id and body["track_id"] == track
    assert body["started_at"] == "2026-05-28T20:26:40.000Z" and body["ended_at"] == "2026-05-28T20:27:10.000Z"
    assert body["ref_end_s"] == pytest.approx(40.6) and body["licensed"] is False
    assert body["detected_at"] == "2026-05-28T20:27:11.500Z"
    assert json.loads(messages[1][2])["schema"] == "castwatch.infringement.v1"
    assert [m[0] for m in outgoing(track, STARTED, T0 + 10, licensed=True).messages()] == ["detections.v1"]


def test_store_is_idempotent_and_never_goes_back_from_ended(conn: psycopg.Connection, track: int) -> None:
    started, ended = outgoing(track, STARTED, T0 + 10), outgoing(track, ENDED, T0 + 30)
    store(conn, [started])
    store(conn, [started])
    assert rows(conn) == [("started", None, pytest.approx(20.2), 1)]
    store(conn, [ended])
    store(conn, [started, ended, started])  # a replay after a crash, in any order
    assert rows(conn) == [("ended", pytest.approx(T0 + 30), pytest.approx(40.6), 1)]


def test_a_start_revised_before_play_ended_reaches_the_row_under_the_same_event_id(conn: psycopg.Connection, track: int) -> None:
    """A play moved onto its true timeline, which reaches 6 s before the announced start: the row takes the
    final start and reference range, and a replayed play.started does not take them back."""
    started = outgoing(track, STARTED, T0 + 10)
    play = started.event.play
    moved = replace(play, began_at=T0 - 6.0, last_seen=T0 + 30, ref_start=40.0, ref_end=76.7)
    ended = Outgoing(PlayEvent(ENDED, moved), started.decision, started.recording, T0 + 31.5)
    assert ended.event.event_id == started.event.event_id
    body = json.loads(ended.messages()[0][2])
    assert body["started_at"] == "2026-05-28T20:26:34.000Z" and body["ref_start_s"] == 40.0
    store(conn, [started, ended, started])

    def row() -> tuple:
        out = conn.execute("SELECT extract(epoch FROM started_at), ref_start_s, ref_end_s, state FROM detections").fetchall()
        conn.commit()
        return out

    assert row() == [(pytest.approx(T0 - 6.0), 40.0, pytest.approx(76.7), "ended")]


def test_licensed_plays_make_no_infringement(conn: psycopg.Connection, track: int) -> None:
    o = outgoing(track, ENDED, T0 + 30, licensed=True)
    store(conn, [o])
    assert rows(conn)[0][3] == 0

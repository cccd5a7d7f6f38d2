"""Rights-holder reports: every play of a holder's recordings in a period, with totals and infringements.

``open_report`` reads one consistent snapshot of the rights database (a
read-only REPEATABLE READ transaction, so a worker writing meanwhile cannot
make the totals disagree with the rows): the totals come from PostgreSQL
aggregates (memory O(recordings + streams + days)), the plays and
infringements from server-side cursors, row by row, so a period with
millions of plays streams out without being held in memory. The writers
(CSV and JSON here, HTML in ``monitor.report_html``) write each row as it
comes.

Semantics (docs/reports.md):

- a play belongs to the period when it starts in [from, to);
- a play counts for the holder when the holder is among the owners that
  count for it, by the licensing rule: the recording's ownership rows for
  the stream's territory, or its worldwide rows where it has none there
  (unregistered streams: worldwide); the holder's share is noted;
- open plays (no end yet) are listed as ongoing and counted as plays, but
  their airtime is not counted (it is not known yet, and counting to "now"
  would make the same data give a different report a second later);
- recordings removed from the catalogue still appear (flagged ``removed``);
- output order is fixed (start time, stream, recording, event id), and
  nothing in a report depends on when it was made.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import IsolationLevel

FORMATS = ("csv", "html", "json")
JSON_SCHEMA = "castwatch.report.v1"
CURSOR_ROWS = 2000  # rows per round trip of the server-side cursors
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets take for a formula


class ReportError(ValueError):
    """A report cannot be made as asked; the message names the value and what to do."""


# ---- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC; ``timezone`` is where the dates were given (and the days of the per-day totals)."""

    start: datetime
    end: datetime
    timezone: str = "UTC"

    def days(self) -> list[date]:
        zone = ZoneInfo(self.timezone)
        first = self.start.astimezone(zone).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(zone).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def parse_bound(raw: str, what: str, zone: str) -> datetime:
    """An ISO date (midnight in ``zone``) or date-time (naive: in ``zone``), as an aware datetime."""
    text = raw.strip()
    try:
        value = datetime.combine(date.fromisoformat(text), time()) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError as e:
        raise ReportError(f"{what} {raw!r} is not an ISO date (2026-06-01) or date-time (2026-06-01T18:00:00+02:00)") from e
    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(zone))


def period(raw_from: str, raw_to: str, zone: str = "UTC") -> Period:
    """The period of ``--from``/``--to`` (``--to`` exclusive), checked."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ReportError(f"--timezone {zone!r} is unknown: use an IANA name such as Europe/Paris") from e
    start = parse_bound(raw_from, "--from", zone)
    end = parse_bound(raw_to, "--to", zone)
    if start >= end:
        raise ReportError(
            f"--from {raw_from} is not before --to {raw_to}: the period is [from, to), so for one day give"
            " the next day as --to (--from 2026-06-01 --to 2026-06-02)"
        )
    return Period(start.astimezone(timezone.utc), end.astimezone(timezone.utc), zone)


@dataclass(frozen=True)
class Request:
    holder: str
    period: Period
    streams: tuple[str, ...] = ()  # empty: every stream


# ---- what a report holds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    event_id: str
    stream_id: str
    stream_name: str
    station_timezone: str
    track_id: int
    isrc: str | None
    title: str
    artist: str
    removed: bool
    started_at: datetime
    ended_at: datetime | None
    ref_start_s: float
    ref_end_s: float | None
    score: float
    speed: float
    licensed: bool
    territory: str
    share: float
    infringement: str | None  # the infringement's status, if the play is one

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Infringement:
    play: Play
    note: str
    updated_by: str | None
    detected_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RecordingTotal:
    """One recording under one ownership row (territory and share) of the holder."""

    track_id: int
    isrc: str | None
    title: str
    artist: str
    removed: bool
    territory: str
    share: float
    plays: int
    ongoing: int
    airtime_s: float
    unlicensed: int


@dataclass(frozen=True)
class StreamTotal:
    stream_id: str
    stream_name: str
    station_timezone: str
    plays: int
    ongoing: int
    airtime_s: float
    unlicensed: int


@dataclass(frozen=True)
class Summary:
    plays: int
    ongoing: int
    airtime_s: float
    unlicensed: int
    recordings: int
    streams: int
    infringements: dict[str, int]  # status -> count, every status present


INFRINGEMENT_STATUSES = ("open", "acknowledged", "resolved")


# ---- queries -------------------------------------------------------------------------------------

# The holder's plays in the period: each detection joined to the holder's ownership row that counts for
# the stream's territory (the licensing rule of monitor.rights.licences: the territory's rows where the
# recording has any, else the worldwide rows).
_PLAYS = """
SELECT d.event_id, d.stream_id, coalesce(s.name, d.stream_id) AS stream_name, coalesce(s.timezone, 'UTC') AS tz,
       d.track_id, t.isrc, t.title, t.artist, t.removed_at IS NOT NULL AS removed,
       d.started_at, d.ended_at, d.ref_start_s, d.ref_end_s, d.score, d.speed, d.licensed,
       o.territory, o.share, i.status AS infringement,
       i.note, i.updated_by, i.created_at AS detected_at, i.updated_at
FROM detections d
JOIN ownership o ON o.track_id = d.track_id AND o.holder_id = %(holder)s
JOIN tracks t ON t.id = d.track_id
LEFT JOIN streams s ON s.id = d.stream_id
LEFT JOIN infringements i ON i.detection_id = d.event_id
WHERE d.started_at >= %(start)s AND d.started_at < %(end)s {streams}
  AND o.territory = CASE
      WHEN EXISTS (SELECT 1 FROM ownership x WHERE x.track_id = d.track_id AND x.territory = s.territory)
      THEN s.territory ELSE 'WW' END
"""
_ORDER = " ORDER BY p.started_at, p.stream_id, p.track_id, p.event_id"
_AIRTIME = "coalesce(sum(extract(epoch FROM p.ended_at - p.started_at)), 0)"  # numeric: exact, any summing order
_COUNTS = f"count(*), count(*) FILTER (WHERE p.ended_at IS NULL), {_AIRTIME}, count(*) FILTER (WHERE NOT p.licensed)"


def _play(row: tuple) -> Play:
    return Play(str(row[0]), *row[1:15], bool(row[15]), row[16], float(row[17]), row[18])


class Report:
    """One holder's report, read inside ``open_report``'s transaction."""

    def __init__(self, conn: psycopg.Connection, request: Request, holder_id: int, holder_name: str) -> None:
        self.request = request
        self.holder_id = holder_id
        self.holder_name = holder_name
        self._conn = conn
        self._params: dict[str, object] = {
            "holder": holder_id, "start": request.period.start, "end": request.period.end,
            "streams": list(request.streams), "tz": request.period.timezone,
        }  # fmt: skip
        stream_filter = "AND d.stream_id = ANY(%(streams)s)" if request.streams else ""
        self._base = f"({_PLAYS.format(streams=stream_filter)}) AS p"
        self.summary = self._summary()
        self.recordings = [
            RecordingTotal(*r[:4], bool(r[4]), r[5], float(r[6]), r[7], r[8], float(r[9]), r[10])
            for r in self._all(
                f"SELECT p.track_id, p.isrc, p.title, p.artist, p.removed, p.territory, p.share, {_COUNTS}"
                f" FROM {self._base} GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY p.track_id, p.territory"
            )
        ]
        self.streams = [
            StreamTotal(r[0], r[1], r[2], r[3], r[4], float(r[5]), r[6])
            for r in self._all(
                f"SELECT p.stream_id, p.stream_name, p.tz, {_COUNTS} FROM {self._base} GROUP BY 1, 2, 3 ORDER BY 1"
            )
        ]
        per_day = dict(
            self._all(f"SELECT (p.started_at AT TIME ZONE %(tz)s)::date, count(*) FROM {self._base} GROUP BY 1")
        )
        self.plays_per_day = [(day, per_day.get(day, 0)) for day in request.period.days()]

    def _all(self, query: str) -> list[tuple]:
        return self._conn.execute(query, self._params).fetchall()  # type: ignore[arg-type]

    def _summary(self) -> Summary:
        (row,) = self._all(f"SELECT {_COUNTS}, count(DISTINCT p.track_id), count(DISTINCT p.stream_id) FROM {self._base}")
        statuses = dict(self._all(f"SELECT p.infringement, count(*) FROM {self._base} WHERE p.infringement IS NOT NULL GROUP BY 1"))
        return Summary(
            row[0], row[1], float(row[2]), row[3], row[4], row[5], {s: statuses.get(s, 0) for s in INFRINGEMENT_STATUSES}
        )

    def _stream(self, name: str, where: str) -> Iterator[tuple]:
        with self._conn.cursor(name=name) as cur:
            cur.itersize = CURSOR_ROWS
            cur.execute(f"SELECT p.* FROM {self._base} {where} {_ORDER}", self._params)  # type: ignore[arg-type]
            yield from cur

    def plays(self) -> Iterator[Play]:
        """Every play in order, fetched ``CURSOR_ROWS`` at a time."""
        for row in self._stream("castwatch_report_plays", ""):
            yield _play(row)

    def infringements(self) -> Iterator[Infringement]:
        """Every infringement (unlicensed play with its record) in order, streamed like ``plays``."""
        for row in self._stream("castwatch_report_infringements", "WHERE p.infringement IS NOT NULL"):
            yield Infringement(_play(row), *row[19:])


def _holder(conn: psycopg.Connection, name: str) -> tuple[int, str]:
    row = conn.execute("SELECT id, name FROM holders WHERE name = %s", (name.strip(),)).fetchone()
    if row is not None:
        return int(row[0]), str(row[1])
    names = [n for (n,) in conn.execute("SELECT name FROM holders ORDER BY name")]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6) or [n for n in names if n.lower() == name.lower()]
    hint = f"did you mean {', '.join(repr(n) for n in close)}?" if close else "see `castwatch holders ls`"
    raise ReportError(f"no rights-holder named {name!r}: {hint}")


def _check_streams(conn: psycopg.Connection, streams: tuple[str, ...]) -> None:
    unknown = [
        s
        for (s,) in conn.execute(
            "SELECT s FROM unnest(%s::text[]) WITH ORDINALITY AS u(s, n)"
            " WHERE NOT EXISTS (SELECT 1 FROM streams WHERE id = s)"
            "   AND NOT EXISTS (SELECT 1 FROM detections WHERE stream_id = s) ORDER BY n",
            (list(streams),),
        )
    ]
    if unknown:
        raise ReportError(
            f"--stream {unknown[0]!r}: no such stream registered or detected (see `castwatch streams ls`)"
        )


@contextmanager
def open_report(conn: psycopg.Connection, request: Request) -> Iterator[Report]:
    """The report, valid inside the ``with`` block: one read-only snapshot of the database.

    ``conn`` must be idle (no transaction open); its settings are restored after.
    """
    saved = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            holder_id, holder_name = _holder(conn, request.holder)
            if request.streams:
                _check_streams(conn, request.streams)
            yield Report(conn, request, holder_id, holder_name)
    finally:
        conn.isolation_level, conn.read_only = saved


# ---- values for people and machines --------------------------------------------------------------


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def utc_iso(t: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z, as in the event JSON."""
    if t is None:
        return None
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_iso(t: datetime | None, zone: str) -> str | None:
    """ISO 8601 in the station's time zone, with its UTC offset."""
    return None if t is None else t.astimezone(_zone(zone)).isoformat(timespec="milliseconds")


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def play_record(p: Play) -> dict[str, object]:
    """A play's fields, in column order (CSV header, JSON keys)."""
    return {
        "event_id": p.event_id,
        "stream_id": p.stream_id,
        "stream_name": p.stream_name,
        "start_utc": utc_iso(p.started_at),
        "end_utc": utc_iso(p.ended_at),
        "start_local": local_iso(p.started_at, p.station_timezone),
        "end_local": local_iso(p.ended_at, p.station_timezone),
        "station_timezone": p.station_timezone,
        "duration_s": _seconds(p.duration_s),
        "ongoing": p.ended_at is None,
        "track_id": p.track_id,
        "isrc": p.isrc,
        "title": p.title,
        "artist": p.artist,
        "removed": p.removed,
        "ref_start_s": _seconds(p.ref_start_s),
        "ref_end_s": _seconds(p.ref_end_s),
        "score": round(p.score, 4),
        "speed": round(p.speed, 4),
        "territory": p.territory,
        "share_percent": p.share,
        "licensed": p.licensed,
        "infringement": p.infringement,
    }


def infringement_record(i: Infringement) -> dict[str, object]:
    """An infringement with its evidence: the play, and who did what with it when."""
    play = play_record(i.play)
    del play["licensed"], play["infringement"]
    return {
        "event_id": play.pop("event_id"),
        "status": i.play.infringement,
        **play,
        "detected_at": utc_iso(i.detected_at),
        "updated_at": utc_iso(i.updated_at),
        "updated_by": i.updated_by,
        "note": i.note,
    }


def recording_record(r: RecordingTotal) -> dict[str, object]:
    return {
        "track_id": r.track_id, "isrc": r.isrc, "title": r.title, "artist": r.artist, "removed": r.removed,
        "territory": r.territory, "share_percent": r.share, "plays": r.plays, "ongoing": r.ongoing,
        "airtime_s": _seconds(r.airtime_s), "unlicensed_plays": r.unlicensed,
    }  # fmt: skip


def stream_record(s: StreamTotal) -> dict[str, object]:
    return {
        "stream_id": s.stream_id, "stream_name": s.stream_name, "station_timezone": s.station_timezone,
        "plays": s.plays, "ongoing": s.ongoing, "airtime_s": _seconds(s.airtime_s), "unlicensed_plays": s.unlicensed,
    }  # fmt: skip


def header_record(report: Report) -> dict[str, object]:
    """Who, which period, which streams, and the overall totals."""
    s = report.summary
    p = report.request.period
    return {
        "holder": report.holder_name,
        "from": utc_iso(p.start),
        "to": utc_iso(p.end),
        "timezone": p.timezone,
        "streams": list(report.request.streams) or "all",
        "plays": s.plays,
        "ongoing_plays": s.ongoing,
        "airtime_s": _seconds(s.airtime_s),
        "unlicensed_plays": s.unlicensed,
        "recordings": s.recordings,
        "streams_with_plays": s.streams,
        **{f"infringements_{status}": n for status, n in s.infringements.items()},
    }


# ---- CSV -----------------------------------------------------------------------------------------


def csv_cell(value: object) -> object:
    """A value as a spreadsheet shows it safely: text that would start a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = " ".join(value)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(report: Report, out: IO[str]) -> None:
    """Sections one below another (title row, header row, rows, blank row); the plays last, streamed.

    UTF-8 with a byte-order mark (Excel reads UTF-8 only with it), RFC 4180
    quoting, CRLF line ends. ``out`` must be opened with ``newline=""``.
    """
    w = csv.writer(out, lineterminator="\r\n")
    out.write("\ufeff")

    def section(title: str, rows: Iterator[dict[str, object]] | list[dict[str, object]], header: list[str]) -> None:
        w.writerow([title])
        w.writerow(header)
        for row in rows:
            w.writerow([csv_cell(v) for v in row.values()])
        w.writerow([])

    w.writerow(["castwatch rights-holder report"])
    for key, value in header_record(report).items():
        w.writerow([key, csv_cell(value)])
    w.writerow([])
    section("totals per recording", [recording_record(r) for r in report.recordings], list(RECORDING_COLUMNS))
    section("totals per stream", [stream_record(s) for s in report.streams], list(STREAM_COLUMNS))
    section("plays per day", [{"date": d.isoformat(), "plays": n} for d, n in report.plays_per_day], ["date", "plays"])
    section("infringements", map(infringement_record, report.infringements()), list(INFRINGEMENT_COLUMNS))
    section("plays", map(play_record, report.plays()), list(PLAY_COLUMNS))


# ---- JSON ----------------------------------------------------------------------------------------


def write_json(report: Report, out: IO[str]) -> None:
    """One JSON document; the lists of infringements and plays are written an element a line as they come."""
    head = {
        "schema": JSON_SCHEMA,
        "holder": {"id": report.holder_id, "name": report.holder_name},
        "period": {
            "from": utc_iso(report.request.period.start),
            "to": utc_iso(report.request.period.end),
            "timezone": report.request.period.timezone,
            "streams": list(report.request.streams),
        },
        "summary": {k: v for k, v in header_record(report).items() if k not in ("holder", "from", "to", "timezone", "streams")},
        "recordings": [recording_record(r) for r in report.recordings],
        "streams": [stream_record(s) for s in report.streams],
        "plays_per_day": [{"date": d.isoformat(), "plays": n} for d, n in report.plays_per_day],
    }
    out.write(json.dumps(head, ensure_ascii=False, indent=1)[:-2])
    for key, records in (
        ("infringements", map(infringement_record, report.infringements())),
        ("plays", map(play_record, report.plays())),
    ):
        out.write(f',\n "{key}": [')
        sep = "\n"
        for record in records:
            out.write(sep + json.dumps(record, ensure_ascii=False))
            sep = ",\n"
        out.write("\n ]")
    out.write("\n}\n")


_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_EXAMPLE_PLAY = Play("", "", "", "UTC", 0, None, "", "", False, _EPOCH, None, 0.0, None, 0.0, 1.0, True, "WW", 100.0, None)
PLAY_COLUMNS = tuple(play_record(_EXAMPLE_PLAY))
INFRINGEMENT_COLUMNS = tuple(infringement_record(Infringement(_EXAMPLE_PLAY, "", None, _EPOCH, _EPOCH)))
RECORDING_COLUMNS = tuple(recording_record(RecordingTotal(0, None, "", "", False, "WW", 100.0, 0, 0, 0.0, 0)))
STREAM_COLUMNS = tuple(stream_record(StreamTotal("", "", "UTC", 0, 0, 0.0, 0)))


def write(report: Report, fmt: str, out: IO[str]) -> None:
    """The report in ``fmt`` (one of ``FORMATS``) to a text stream opened with ``newline=""``."""
    from monitor.report_html import write_html

    {"csv": write_csv, "json": write_json, "html": write_html}[fmt](report, out)


def save(conn: psycopg.Connection, request: Request, fmt: str, path: Path | None) -> None:
    """Write the report to ``path`` (atomically: a failure leaves no partial file) or to stdout."""
    if path is None:
        sys.stdout.flush()
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            with open_report(conn, request) as report:
                write(report, fmt, out)
        finally:
            out.flush()
            out.detach()
        return
    if not path.parent.is_dir():
        raise ReportError(f"--out {path}: the directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out, open_report(conn, request) as report:
            write(report, fmt, out)
        os.replace(tmp, path)
    except OSError as e:
        raise ReportError(f"--out {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)

"""Who may broadcast what: streams, licences, and the licensing decision for a play.

The decision is pure (``LicenceBook.decide``) over a snapshot of streams,
ownership and licences, so the daemon decides each play from a cache in
microseconds and the rules are tested without a database:

- The owners that count for a play are the track's ownership rows for the
  stream's territory; where there are none, its worldwide ('WW') rows.
- Each such owner must be covered by a licence of the stream's licensee that
  is in force at the play's time (``valid_from <= t < valid_until``, and
  before ``revoked_at`` if revoked) and names the stream's territory or WW:
  a blanket licence from that holder, or a per-track licence for the track
  (limited to one holder's share when it names one).
- The play is licensed when every owner that counts is covered. A track with
  no owner on record for the territory has nobody to infringe: licensed,
  and the reason says so.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from monitor.rights.catalog import WORLDWIDE, CatalogError, holder_id, normalise_territory

KINDS = ("blanket", "per-track")


class LicenceError(ValueError):
    """Bad stream or licence input; the message names the value."""


@dataclass(frozen=True)
class Stream:
    id: str
    name: str
    licensee: str
    territory: str
    timezone: str = "UTC"
    source_url: str | None = None


@dataclass(frozen=True)
class Licence:
    id: int
    licensee: str
    kind: str
    holder_id: int | None
    track_id: int | None
    territories: frozenset[str]
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None

    def in_force(self, at: datetime) -> bool:
        if at < self.valid_from:
            return False
        if self.valid_until is not None and at >= self.valid_until:
            return False
        return self.revoked_at is None or at < self.revoked_at

    def covers_territory(self, territory: str) -> bool:
        return territory in self.territories or WORLDWIDE in self.territories


@dataclass(frozen=True)
class Decision:
    licensed: bool
    reason: str
    unlicensed_holders: tuple[int, ...] = ()  # holder ids whose share is not covered


@dataclass
class LicenceBook:
    """Everything the licensing decision needs, held in memory."""

    streams: dict[str, Stream] = field(default_factory=dict)
    holders: dict[int, str] = field(default_factory=dict)  # id -> name
    ownership: dict[int, list[tuple[int, str, float]]] = field(default_factory=dict)  # track -> (holder, territory, share)
    licences: dict[str, list[Licence]] = field(default_factory=dict)  # licensee -> licences

    def owners_for(self, track_id: int, territory: str) -> list[tuple[int, float]]:
        rows = self.ownership.get(track_id, [])
        local = [(h, s) for h, t, s in rows if t == territory]
        return local or [(h, s) for h, t, s in rows if t == WORLDWIDE]

    def decide(self, stream_id: str, track_id: int, at: datetime) -> Decision:
        if at.tzinfo is None:
            raise ValueError("play times must be timezone-aware (UTC)")
        stream = self.streams.get(stream_id)
        if stream is None:
            return Decision(False, f"stream {stream_id!r} is not registered: no licensee known")
        owners = self.owners_for(track_id, stream.territory)
        if not owners:
            return Decision(True, f"no rights-holder on record for track {track_id} in {stream.territory}")
        candidates = [
            lic
            for lic in self.licences.get(stream.licensee, [])
            if lic.in_force(at) and lic.covers_territory(stream.territory)
        ]
        uncovered = []
        for holder, _share in owners:
            if not any(
                (lic.kind == "blanket" and lic.holder_id == holder)
                or (lic.kind == "per-track" and lic.track_id == track_id and lic.holder_id in (None, holder))
                for lic in candidates
            ):
                uncovered.append(holder)
        if uncovered:
            names = ", ".join(self.holders.get(h, f"holder {h}") for h in uncovered)
            return Decision(
                False,
                f"{stream.licensee} holds no licence in force in {stream.territory} from {names}",
                tuple(uncovered),
            )
        return Decision(True, f"licensed to {stream.licensee} in {stream.territory}")


def load_book(conn: psycopg.Connection) -> LicenceBook:
    """Read streams, holders, ownership and licences in one consistent snapshot (needs an idle connection)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("loading licences needs an idle connection: commit or roll back first")
    book = LicenceBook()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for row in conn.execute("SELECT id, name, licensee, territory, timezone, source_url FROM streams"):
            book.streams[row[0]] = Stream(*row)
        book.holders = dict(conn.execute("SELECT id, name FROM holders").fetchall())
        for track, holder, territory, share in conn.execute(
            "SELECT track_id, holder_id, territory, share FROM ownership"
        ):
            book.ownership.setdefault(track, []).append((holder, territory, float(share)))
        for row in conn.execute(
            "SELECT id, licensee, kind, holder_id, track_id, territories, valid_from, valid_until, revoked_at"
            " FROM licences"
        ):
            lic = Licence(*row[:5], frozenset(row[5]), *row[6:])  # type: ignore[arg-type]
            book.licences.setdefault(lic.licensee, []).append(lic)
    return book


# ---- streams -------------------------------------------------------------------------------------


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise LicenceError(f"time zone {name!r} is unknown: use an IANA name such as Europe/Paris") from e
    return name


def add_stream(conn: psycopg.Connection, stream: Stream, replace: bool = False) -> None:
    """Register a stream (or update it with ``replace``)."""
    try:
        territory = normalise_territory(stream.territory)
    except CatalogError as e:
        raise LicenceError(str(e)) from e
    if territory == WORLDWIDE:
        raise LicenceError("a stream broadcasts in one territory; WW is only for ownership and licences")
    check_timezone(stream.timezone)
    conflict = (
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, licensee = EXCLUDED.licensee,"
        " territory = EXCLUDED.territory, timezone = EXCLUDED.timezone, source_url = EXCLUDED.source_url"
        if replace
        else ""
    )
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO streams (id, name, licensee, territory, timezone, source_url)"  # type: ignore[arg-type]
                " VALUES (%s, %s, %s, %s, %s, %s) " + conflict,
                (stream.id, stream.name or stream.id, stream.licensee, territory, stream.timezone, stream.source_url),
            )
    except psycopg.errors.UniqueViolation as e:
        raise LicenceError(f"stream {stream.id!r} already exists (use --replace to update it)") from e
    except psycopg.errors.CheckViolation as e:
        raise LicenceError(f"stream {stream.id!r}: invalid value ({e.diag.constraint_name}); ids are 1-128 of A-Z a-z 0-9 . _ : -") from e


def list_streams(conn: psycopg.Connection) -> list[Stream]:
    return [
        Stream(*row)
        for row in conn.execute("SELECT id, name, licensee, territory, timezone, source_url FROM streams ORDER BY id")
    ]


def remove_stream(conn: psycopg.Connection, stream_id: str) -> None:
    try:
        with conn.transaction():
            cur = conn.execute("DELETE FROM streams WHERE id = %s", (stream_id,))
    except psycopg.errors.ForeignKeyViolation as e:
        raise LicenceError(f"stream {stream_id!r} has detections; it stays for the reports") from e
    if cur.rowcount == 0:
        raise LicenceError(f"no stream {stream_id!r} (see `castwatch streams ls`)")


# ---- licences ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenceSpec:
    licensee: str
    kind: str
    territories: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None = None
    holder: str | None = None
    track_id: int | None = None
    note: str = ""


def parse_time(raw: str, what: str) -> datetime:
    """An ISO date or date-time; dates are midnight UTC, naive times are UTC."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError as e:
        raise LicenceError(f"{what} {raw!r} is not an ISO date (2026-01-31) or date-time (2026-01-31T18:00:00+01:00)") from e
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def add_licence(conn: psycopg.Connection, spec: LicenceSpec) -> int:
    if spec.kind not in KINDS:
        raise LicenceError(f"licence kind {spec.kind!r}: expected one of {', '.join(KINDS)}")
    if not spec.licensee.strip():
        raise LicenceError("a licence needs a licensee")
    if spec.kind == "blanket" and (spec.holder is None or spec.track_id is not None):
        raise LicenceError("a blanket licence names a holder (--holder) and no track")
    if spec.kind == "per-track" and spec.track_id is None:
        raise LicenceError("a per-track licence names a track (--track ID)")
    if spec.valid_until is not None and spec.valid_until <= spec.valid_from:
        raise LicenceError(f"licence ends ({spec.valid_until.isoformat()}) before it starts ({spec.valid_from.isoformat()})")
    try:
        territories = sorted({normalise_territory(t) for t in spec.territories})
    except CatalogError as e:
        raise LicenceError(str(e)) from e
    if not territories:
        raise LicenceError("a licence covers at least one territory (or WW)")
    with conn.transaction():
        if spec.track_id is not None and conn.execute(
            "SELECT 1 FROM tracks WHERE id = %s", (spec.track_id,)
        ).fetchone() is None:
            raise LicenceError(f"no track {spec.track_id} in the catalogue")
        holder = holder_id(conn, spec.holder) if spec.holder else None
        row = conn.execute(
            """INSERT INTO licences (licensee, kind, holder_id, track_id, territories, valid_from, valid_until, note)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (spec.licensee.strip(), spec.kind, holder, spec.track_id, territories, spec.valid_from, spec.valid_until, spec.note),
        ).fetchone()
    assert row is not None
    return int(row[0])


def revoke_licence(conn: psycopg.Connection, licence_id: int, at: datetime | None = None) -> datetime:
    """Revoke from ``at`` (default now); plays before it stay licensed."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE licences SET revoked_at = coalesce(%s, now()) WHERE id = %s AND revoked_at IS NULL RETURNING revoked_at",
            (at, licence_id),
        ).fetchone()
        if row is None:
            if conn.execute("SELECT 1 FROM licences WHERE id = %s", (licence_id,)).fetchone() is None:
                raise LicenceError(f"no licence {licence_id} (see `castwatch licences ls`)")
            raise LicenceError(f"licence {licence_id} is already revoked")
    return row[0]


@dataclass(frozen=True)
class LicenceRow:
    id: int
    licensee: str
    kind: str
    holder: str | None
    track_id: int | None
    territories: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None
    note: str


def list_licences(conn: psycopg.Connection, licensee: str | None = None) -> list[LicenceRow]:
    rows = conn.execute(
        """SELECT l.id, l.licensee, l.kind, h.name, l.track_id, l.territories, l.valid_from, l.valid_until,
                  l.revoked_at, l.note
           FROM licences l LEFT JOIN holders h ON h.id = l.holder_id
           WHERE %s::text IS NULL OR l.licensee = %s ORDER BY l.id""",
        (licensee, licensee),
    ).fetchall()
    return [LicenceRow(*r[:5], tuple(r[5]), *r[6:]) for r in rows]  # type: ignore[arg-type]


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise LicenceError(f"{path}: cannot read: {e}") from e


def read_licence_csv(path: Path) -> list[LicenceSpec]:
    """Licences from a CSV: licensee, kind, holder, track, territories (space or ; separated),
    valid_from, valid_until, note. All rows are checked before any is written."""
    rows = _read_csv(path)
    specs = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        try:
            track = (row.get("track") or "").strip()
            specs.append(
                LicenceSpec(
                    licensee=(row.get("licensee") or "").strip(),
                    kind=(row.get("kind") or "").strip(),
                    territories=tuple(t for t in (row.get("territories") or "").replace(";", " ").split() if t),
                    valid_from=parse_time(row.get("valid_from") or "", "valid_from"),
                    valid_until=parse_time(row["valid_until"], "valid_until") if (row.get("valid_until") or "").strip() else None,
                    holder=(row.get("holder") or "").strip() or None,
                    track_id=int(track) if track else None,
                    note=(row.get("note") or "").strip(),
                )
            )
        except (LicenceError, ValueError) as e:
            raise LicenceError(f"{where}: {e}") from e
    return specs


def read_stream_csv(path: Path) -> list[Stream]:
    """Streams from a CSV: id, name, licensee, territory, timezone, source_url."""
    rows = _read_csv(path)
    streams = []
    for line, row in enumerate(rows, start=2):
        if not (row.get("id") or "").strip() or not (row.get("licensee") or "").strip():
            raise LicenceError(f"{path}:{line}: id and licensee are required")
        streams.append(
            Stream(
                id=row["id"].strip(),
                name=(row.get("name") or "").strip(),
                licensee=row["licensee"].strip(),
                territory=(row.get("territory") or "").strip(),
                timezone=(row.get("timezone") or "").strip() or "UTC",
                source_url=(row.get("source_url") or "").strip() or None,
            )
        )
    return streams


def import_all(conn: psycopg.Connection, items: Iterable[LicenceSpec]) -> list[int]:
    """Add licences all-or-nothing."""
    with conn.transaction():
        return [add_licence(conn, spec) for spec in items]

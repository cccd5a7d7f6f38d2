"""``castwatch identify``: match files against the catalogue, with metadata and licensing.

The catalogue's index is cached on disk per database (``catalogue_id``) and
catalogue generation, memory-mapped on the next run: a repeated ``identify``
costs a two-row query and a map, not a snapshot load. Any catalogue change
bumps the generation, so a stale cache is never used.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from fingerprint import index as index_mod
from fingerprint.cli import fingerprint_file
from fingerprint.index import Index, IndexFormatError
from fingerprint.landmarks import QUERY
from fingerprint.matcher import Match, Matcher
from monitor.rights.catalog import Owner
from monitor.rights.licences import LicenceBook, LicenceError, load_book
from monitor.rights.snapshot import load_snapshot

log = logging.getLogger(__name__)


def _state(conn: psycopg.Connection) -> tuple[str, int]:
    row = conn.execute("SELECT catalogue_id, generation FROM catalogue_state").fetchone()
    assert row is not None
    conn.commit()
    return str(row[0]), int(row[1])


def cached_index(conn: psycopg.Connection, cache_dir: Path) -> Index:
    """The catalogue's index: from the cache when current, else a fresh snapshot (then cached)."""
    catalogue_id, generation = _state(conn)
    home = cache_dir / "index" / catalogue_id
    path = home / f"g{generation}"
    if path.exists():
        try:
            return index_mod.load(path)
        except IndexFormatError as e:
            log.warning("ignoring the index cache %s: %s", path, e)
    snapshot = load_snapshot(conn)
    conn.commit()
    path = home / f"g{snapshot.generation}"
    try:
        if home.exists():
            for old in home.iterdir():
                if old.name != path.name:
                    shutil.rmtree(old, ignore_errors=True)
        index_mod.save(snapshot.index, path)
    except OSError as e:  # a read-only cache costs speed, not correctness
        log.warning("cannot write the index cache %s: %s", path, e)
    return snapshot.index


@dataclass(frozen=True)
class Identified:
    match: Match
    track_id: int
    title: str
    artist: str
    isrc: str | None
    owners: tuple[Owner, ...]
    licensed: bool | None  # None when no stream was given
    licence_reason: str | None

    def as_json(self) -> dict[str, object]:
        out = self.match.as_json()
        out.update(
            track_id=self.track_id,
            title=self.title,
            artist=self.artist,
            isrc=self.isrc,
            holders=[{"name": o.holder, "territory": o.territory, "share": o.share} for o in self.owners],
        )
        if self.licensed is not None:
            out.update(licensed=self.licensed, licence_reason=self.licence_reason)
        return out


def _metadata(conn: psycopg.Connection, track_ids: list[int]) -> dict[int, tuple[str, str, str | None, tuple[Owner, ...]]]:
    rows = conn.execute(
        """SELECT t.id, t.title, t.artist, t.isrc,
                  coalesce(array_agg(ARRAY[h.name, o.territory, o.share::text] ORDER BY h.name, o.territory)
                           FILTER (WHERE h.id IS NOT NULL), '{}')
           FROM tracks t LEFT JOIN ownership o ON o.track_id = t.id LEFT JOIN holders h ON h.id = o.holder_id
           WHERE t.id = ANY(%s) GROUP BY t.id""",
        (track_ids,),
    ).fetchall()
    conn.commit()
    return {r[0]: (r[1], r[2], r[3], tuple(Owner(o[0], float(o[2]), o[1]) for o in r[4])) for r in rows}


class Identifier:
    """Matches files and describes the matches from the rights database."""

    def __init__(self, conn: psycopg.Connection, index: Index, stream: str | None = None, at: datetime | None = None):
        self.conn = conn
        self.matcher = Matcher(index)
        self.stream = stream
        self.at = at
        self.book: LicenceBook | None = load_book(conn) if stream is not None else None
        if self.book is not None and stream not in self.book.streams:
            raise LicenceError(f"no stream {stream!r} registered (see `castwatch streams ls`)")

    def identify(self, source: str) -> list[Identified]:
        """Matches of one file or URL, best first; IdentifyError if it cannot be decoded."""
        result = fingerprint_file(source, QUERY)
        if result.error is not None:
            raise IdentifyError(result.error)
        assert result.landmarks is not None
        matches = self.matcher.match(result.landmarks)
        meta = _metadata(self.conn, [int(m.track) for m in matches])
        found = []
        for m in matches:
            track_id = int(m.track)
            title, artist, isrc, owners = meta.get(track_id, ("(removed)", "", None, ()))
            licensed: bool | None = None
            reason: str | None = None
            if self.book is not None and self.stream is not None and self.at is not None:
                decision = self.book.decide(self.stream, track_id, self.at)
                licensed, reason = decision.licensed, decision.reason
            found.append(Identified(m, track_id, title, artist, isrc, owners, licensed, reason))
        return found


class IdentifyError(RuntimeError):
    """A query file could not be decoded or fingerprinted."""

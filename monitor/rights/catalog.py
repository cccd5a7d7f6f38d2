"""The reference catalogue: adding recordings (fingerprints included), listing, removing.

Ingestion decodes and fingerprints files in worker processes while the main
process writes finished tracks to PostgreSQL in batches, one transaction per
batch (track rows, ownership and fingerprints together), so an interrupted
ingest leaves no half-written track and simply re-runs: files already in the
catalogue are recognised by the SHA-256 of their bytes and skipped.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg

from fingerprint.audio import AudioError, decode
from fingerprint.cli import in_processes
from fingerprint.index import Postings
from fingerprint.landmarks import extract
from fingerprint.params import PARAMS_VERSION, SAMPLE_RATE
from fingerprint.spectrum import n_frames_for

log = logging.getLogger(__name__)

BATCH_TRACKS = 64
BATCH_SECONDS = 5.0
WRITE_ATTEMPTS = 6
RETRY_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
WORLDWIDE = "WW"

_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")
_TERRITORY = re.compile(r"^[A-Z]{2}$")


class CatalogError(ValueError):
    """Bad catalogue input (metadata, manifest, unknown track); the message names it."""


@dataclass(frozen=True)
class Owner:
    holder: str
    share: float = 100.0
    territory: str = WORLDWIDE


@dataclass(frozen=True)
class TrackMeta:
    title: str | None = None  # default: the file name without extension
    artist: str = ""
    isrc: str | None = None
    owners: tuple[Owner, ...] = ()


def normalise_isrc(raw: str | None) -> str | None:
    """ISRC in its 12-character form (hyphens and spaces dropped, upper case); None if empty."""
    if raw is None or not raw.strip():
        return None
    isrc = re.sub(r"[\s-]", "", raw).upper()
    if not _ISRC.match(isrc):
        raise CatalogError(f"ISRC {raw!r} is not valid: expected CC-XXX-YY-NNNNN (country, registrant, year, number)")
    return isrc


def normalise_territory(raw: str) -> str:
    territory = raw.strip().upper()
    if not _TERRITORY.match(territory):
        raise CatalogError(f"territory {raw!r}: expected an ISO 3166-1 alpha-2 code such as FR, or WW for worldwide")
    return territory


def check_owners(owners: Iterable[Owner], what: str) -> tuple[Owner, ...]:
    owners = tuple(owners)
    if not owners:
        raise CatalogError(f"{what}: no rights-holder given (use --holder NAME or a holder column in the manifest)")
    per_territory: dict[str, float] = {}
    for owner in owners:
        if not owner.holder.strip():
            raise CatalogError(f"{what}: empty rights-holder name")
        if not 0 < owner.share <= 100:
            raise CatalogError(f"{what}: share {owner.share} of {owner.holder!r} must be in (0, 100]")
        per_territory[owner.territory] = per_territory.get(owner.territory, 0.0) + owner.share
    over = {t: s for t, s in per_territory.items() if s > 100.0 + 1e-9}
    if over:
        raise CatalogError(f"{what}: shares add up to more than 100 % in {over}")
    return owners


def read_manifest(path: Path) -> dict[Path, TrackMeta]:
    """Metadata per file from a CSV with a header row.

    Columns: ``path`` (required; relative to the manifest's folder), ``title``,
    ``artist``, ``isrc``, ``holder``, ``share`` (percent, default 100),
    ``territory`` (default WW). Several rows for one path list several owners.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path}: cannot read the manifest: {e}") from e
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "path" not in reader.fieldnames:
        raise CatalogError(f"{path}: the manifest needs a header row with at least a 'path' column")
    unknown = set(reader.fieldnames) - {"path", "title", "artist", "isrc", "holder", "share", "territory"}
    if unknown:
        raise CatalogError(f"{path}: unknown manifest columns {sorted(unknown)}")
    metas: dict[Path, TrackMeta] = {}
    owners: dict[Path, list[Owner]] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        if not (row.get("path") or "").strip():
            raise CatalogError(f"{where}: empty path")
        file = (path.parent / row["path"].strip()).resolve()
        try:
            meta = TrackMeta(
                title=(row.get("title") or "").strip() or None,
                artist=(row.get("artist") or "").strip(),
                isrc=normalise_isrc(row.get("isrc")),
            )
        except CatalogError as e:
            raise CatalogError(f"{where}: {e}") from e
        if file in metas and (meta.title, meta.artist, meta.isrc) != (
            metas[file].title,
            metas[file].artist,
            metas[file].isrc,
        ):
            raise CatalogError(f"{where}: {row['path']} appears again with different metadata")
        metas[file] = meta
        holder = (row.get("holder") or "").strip()
        if holder:
            try:
                share = float(row.get("share") or 100)
            except ValueError as e:
                raise CatalogError(f"{where}: share {row.get('share')!r} is not a number") from e
            owner = Owner(holder, share, normalise_territory(row.get("territory") or WORLDWIDE))
            owners.setdefault(file, []).append(owner)
    return {
        file: TrackMeta(meta.title, meta.artist, meta.isrc, tuple(owners.get(file, ()))) for file, meta in metas.items()
    }


def content_hash(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


@dataclass(frozen=True)
class Fingerprinted:
    """One file, decoded and fingerprinted in a worker process (or why not)."""

    path: Path
    postings: Postings | None
    seconds: float
    error: str | None


def fingerprint_path(path: Path) -> Fingerprinted:
    try:
        samples = decode(path)
    except AudioError as e:
        return Fingerprinted(path, None, 0.0, str(e))
    n_frames = n_frames_for(samples.shape[0])
    if n_frames == 0:
        return Fingerprinted(path, None, 0.0, f"{path}: too short to fingerprint ({samples.shape[0]} samples)")
    return Fingerprinted(path, Postings.of(extract(samples), n_frames), samples.shape[0] / SAMPLE_RATE, None)


def fingerprint_paths(paths: list[Path], jobs: int) -> Iterator[Fingerprinted]:
    """Results in input order, from ``jobs`` processes (in-process for 1)."""
    return in_processes(fingerprint_path, paths, jobs)


@dataclass
class IngestReport:
    added: list[tuple[Path, int]] = field(default_factory=list)  # path, track id
    restored: list[tuple[Path, int]] = field(default_factory=list)
    already: list[tuple[Path, int | None]] = field(default_factory=list)  # None: repeated in this run
    failed: list[tuple[Path, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class _Pending:
    path: Path
    sha256: bytes
    meta: TrackMeta
    restore_id: int | None  # a removed track with this content: bring it back


def holder_id(conn: psycopg.Connection, name: str) -> int:
    """The id of a rights-holder, created if new."""
    row = conn.execute(
        "INSERT INTO holders (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        (name.strip(),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _write_batch(conn: psycopg.Connection, batch: list[tuple[_Pending, Fingerprinted]]) -> list[int]:
    """One transaction: track rows, owners, fingerprints. Returns the track ids."""
    ids: list[int] = []
    with conn.transaction():
        for item, result in batch:
            if item.restore_id is not None:
                conn.execute("UPDATE tracks SET removed_at = NULL WHERE id = %s", (item.restore_id,))
                ids.append(item.restore_id)
                continue
            row = conn.execute(
                """INSERT INTO tracks (isrc, title, artist, duration_s, content_sha256, source)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
                (
                    item.meta.isrc,
                    item.meta.title or item.path.stem,
                    item.meta.artist,
                    result.seconds,
                    item.sha256,
                    str(item.path),
                ),
            ).fetchone()
            assert row is not None
            track_id = int(row[0])
            ids.append(track_id)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO ownership (track_id, holder_id, territory, share) VALUES (%s, %s, %s, %s)",
                    [(track_id, holder_id(conn, o.holder), o.territory, o.share) for o in item.meta.owners],
                )
        with conn.cursor() as cur, cur.copy(
            "COPY fingerprints (track_id, params_version, n_frames, n_postings, keys, frames, spans, pitches)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "int4", "int4", "int4", "bytea", "bytea", "bytea", "bytea"])
            for track_id, (_, result) in zip(ids, batch):
                p = result.postings
                assert p is not None
                copy.write_row(
                    (
                        track_id,
                        PARAMS_VERSION,
                        p.n_frames,
                        len(p),
                        p.keys.astype("<u4").tobytes(),
                        p.frames.astype("<u4").tobytes(),
                        p.spans.tobytes(),
                        p.pitches.tobytes(),
                    )
                )
    return ids


def _split_written(
    conn: psycopg.Connection, batch: list[tuple[_Pending, Fingerprinted]]
) -> tuple[list[tuple[_Pending, Fingerprinted, int]], list[tuple[_Pending, Fingerprinted]]]:
    """(already in the catalogue with fingerprints, still to write) of a batch being retried."""
    rows = conn.execute(
        "SELECT t.content_sha256, t.id FROM tracks t JOIN fingerprints f ON f.track_id = t.id"
        " WHERE t.content_sha256 = ANY(%s) AND t.removed_at IS NULL",
        ([item.sha256 for item, _ in batch],),
    ).fetchall()
    conn.commit()
    present = {bytes(sha): int(track_id) for sha, track_id in rows}
    done = [(item, result, present[item.sha256]) for item, result in batch if item.sha256 in present]
    todo = [(item, result) for item, result in batch if item.sha256 not in present]
    return done, todo


class _BatchWriter:
    """Collects fingerprinted tracks and writes them a batch (one transaction) at a time."""

    def __init__(
        self,
        conn: psycopg.Connection,
        report: IngestReport,
        notify: Callable[[Path, str, float], None],
        reconnect: Callable[[], psycopg.Connection] | None,
    ) -> None:
        self.conn = conn
        self.report = report
        self.notify = notify
        self.reconnect = reconnect
        self.batch: list[tuple[_Pending, Fingerprinted]] = []
        self.last_write = time.perf_counter()

    def add(self, item: _Pending, result: Fingerprinted) -> None:
        self.batch.append((item, result))
        if len(self.batch) >= BATCH_TRACKS or time.perf_counter() - self.last_write > BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        for item, result, track_id in self._write_with_retries(list(self.batch)):
            restored = item.restore_id is not None
            (self.report.restored if restored else self.report.added).append((item.path, track_id))
            self.report.audio_seconds += result.seconds
            self.notify(item.path, "restored" if restored else "added", result.seconds)
        self.batch.clear()
        self.last_write = time.perf_counter()

    def _write_with_retries(
        self, pending: list[tuple[_Pending, Fingerprinted]]
    ) -> list[tuple[_Pending, Fingerprinted, int]]:
        written: list[tuple[_Pending, Fingerprinted, int]] = []
        delay = RETRY_BACKOFF_S
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                if attempt > 1:  # the lost commit may have gone through: do not write twice
                    done, pending = _split_written(self.conn, pending)
                    written += done
                ids = _write_batch(self.conn, pending)
                return written + [(item, result, track_id) for (item, result), track_id in zip(pending, ids)]
            except psycopg.OperationalError as e:
                if self.reconnect is None or attempt == WRITE_ATTEMPTS:
                    raise
                log.warning("writing to the catalogue failed (attempt %d of %d), retrying in %.1f s: %s",
                            attempt, WRITE_ATTEMPTS, delay, str(e).strip())  # fmt: skip
                time.sleep(delay)
                self.conn.close()
                self.conn = self.reconnect()
                delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")


def _plan(
    conn: psycopg.Connection,
    files: list[Path],
    metas: dict[Path, TrackMeta],
    default: TrackMeta,
    report: IngestReport,
    notify: Callable[[Path, str, float], None],
) -> list[_Pending]:
    """Files to fingerprint: metadata checked, content hashed, known content skipped."""
    todo: list[_Pending] = []
    seen: dict[bytes, Path] = {}
    for path in files:
        meta = metas.get(path.resolve(), default)
        if meta is not default and not meta.owners:
            meta = TrackMeta(meta.title, meta.artist, meta.isrc, default.owners)
        try:
            check_owners(meta.owners, str(path))
            digest = content_hash(path)
        except (CatalogError, OSError) as e:
            report.failed.append((path, str(e)))
            notify(path, f"failed: {e}", 0.0)
            continue
        if digest in seen:
            report.already.append((path, None))
            notify(path, f"same content as {seen[digest]}", 0.0)
            continue
        seen[digest] = path
        todo.append(_Pending(path, digest, meta, None))
    known = {
        bytes(sha): (int(track_id), removed)
        for sha, track_id, removed in conn.execute(
            "SELECT content_sha256, id, removed_at IS NOT NULL FROM tracks WHERE content_sha256 = ANY(%s)",
            ([p.sha256 for p in todo],),
        ).fetchall()
    }
    conn.commit()
    fresh: list[_Pending] = []
    for item in todo:
        if item.sha256 in known:
            track_id, removed = known[item.sha256]
            if not removed:
                report.already.append((item.path, track_id))
                notify(item.path, f"already in the catalogue as track {track_id}", 0.0)
                continue
            item = _Pending(item.path, item.sha256, item.meta, track_id)
        fresh.append(item)
    return fresh


def add(
    conn: psycopg.Connection,
    files: list[Path],
    metas: dict[Path, TrackMeta],
    default: TrackMeta,
    jobs: int = 1,
    on_file: Callable[[Path, str, float], None] | None = None,
    reconnect: Callable[[], psycopg.Connection] | None = None,
) -> IngestReport:
    """Ingest ``files``: fingerprint new ones in ``jobs`` processes, write them in batches.

    ``metas`` (keyed by resolved path) overrides ``default`` per file. ``on_file``
    is told each file's outcome ("added", "restored", "already in the
    catalogue as track N", "same content as PATH", "failed: ...") and its audio
    seconds, for progress display. With ``reconnect``, a batch whose
    connection is lost is written again on a new connection (with backoff,
    WRITE_ATTEMPTS times, each failure logged); without it the error
    propagates, having written nothing of that batch.
    """
    report = IngestReport()
    started = time.perf_counter()
    notify = on_file or (lambda path, outcome, seconds: None)
    fresh = _plan(conn, files, metas, default, report, notify)
    writer = _BatchWriter(conn, report, notify, reconnect)
    for item, result in zip(fresh, fingerprint_paths([p.path for p in fresh], jobs)):
        if result.error is not None:
            report.failed.append((item.path, result.error))
            notify(item.path, f"failed: {result.error}", 0.0)
        else:
            writer.add(item, result)
    writer.flush()
    report.elapsed_s = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class TrackInfo:
    id: int
    title: str
    artist: str
    isrc: str | None
    duration_s: float
    source: str
    added_at: object
    removed: bool
    owners: tuple[tuple[str, str, float], ...]  # holder, territory, share
    n_postings: int


_TRACK_SELECT = """
SELECT t.id, t.title, t.artist, t.isrc, t.duration_s, t.source, t.added_at, t.removed_at IS NOT NULL,
       coalesce((SELECT array_agg(ARRAY[h.name, o.territory, o.share::text] ORDER BY h.name, o.territory)
                 FROM ownership o JOIN holders h ON h.id = o.holder_id WHERE o.track_id = t.id), '{}'),
       coalesce(f.n_postings, 0)
FROM tracks t LEFT JOIN fingerprints f ON f.track_id = t.id
"""


def _info(row: tuple) -> TrackInfo:
    owners = tuple((o[0], o[1], float(o[2])) for o in row[8])
    return TrackInfo(*row[:8], owners=owners, n_postings=int(row[9]))  # type: ignore[arg-type]


def list_tracks(
    conn: psycopg.Connection, holder: str | None = None, include_removed: bool = False
) -> Iterator[TrackInfo]:
    where = ["TRUE"]
    params: list[object] = []
    if not include_removed:
        where.append("t.removed_at IS NULL")
    if holder is not None:
        where.append(
            "EXISTS (SELECT 1 FROM ownership o JOIN holders h ON h.id = o.holder_id"
            " WHERE o.track_id = t.id AND h.name = %s)"
        )
        params.append(holder)
    with conn.cursor(name="catalog_ls") as cur:
        cur.execute(_TRACK_SELECT + " WHERE " + " AND ".join(where) + " ORDER BY t.id", params)  # type: ignore[arg-type]
        for row in cur:
            yield _info(row)


def show(conn: psycopg.Connection, track_id: int) -> TrackInfo:
    row = conn.execute(_TRACK_SELECT + " WHERE t.id = %s", (track_id,)).fetchone()  # type: ignore[arg-type]
    if row is None:
        raise CatalogError(f"no track {track_id} in the catalogue (see `castwatch catalog ls`)")
    return _info(row)


def remove(conn: psycopg.Connection, track_id: int) -> None:
    """Take a track out of matching: its fingerprints go, its row stays for reports."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE tracks SET removed_at = now() WHERE id = %s AND removed_at IS NULL RETURNING id", (track_id,)
        ).fetchone()
        if row is None:
            exists = conn.execute("SELECT removed_at FROM tracks WHERE id = %s", (track_id,)).fetchone()
            if exists is None:
                raise CatalogError(f"no track {track_id} in the catalogue (see `castwatch catalog ls`)")
            raise CatalogError(f"track {track_id} was already removed on {exists[0]:%Y-%m-%d %H:%M} UTC")
        conn.execute("DELETE FROM fingerprints WHERE track_id = %s", (track_id,))


def load_postings(row_keys: bytes, row_frames: bytes, row_spans: bytes, row_pitches: bytes, n_frames: int) -> Postings:
    """Postings from the packed little-endian columns of a fingerprints row."""
    return Postings(
        keys=np.frombuffer(row_keys, "<u4").astype(np.uint32, copy=False),
        frames=np.frombuffer(row_frames, "<u4").astype(np.uint32, copy=False),
        spans=np.frombuffer(row_spans, np.uint8),
        pitches=np.frombuffer(row_pitches, np.uint8),
        n_frames=n_frames,
    )

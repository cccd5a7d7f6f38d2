"""The in-memory index of the catalogue: loaded from PostgreSQL, kept in step with it.

``load_snapshot`` reads every fingerprint row with one binary COPY (the
packed arrays go straight into numpy) inside a repeatable-read transaction,
together with the catalogue generation it corresponds to.

``LiveCatalogue`` keeps a process's index and licence book current without
restarts: a thread LISTENs on its own autocommit connection for
``castwatch_catalogue`` ("+ID"/"-ID" from the fingerprints trigger) and
``castwatch_licences``, applies additions and removals in small batches (a
rebuild in linear time), reloads the licence book on licence changes, and
swaps the new index or book in atomically. LISTEN is issued before the snapshot
is read, so no change falls between the two; after a lost connection it
reconnects with backoff and reloads everything, since notifications sent
while it was away are gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from fingerprint.index import Index, IndexBuilder, merge
from fingerprint.params import PARAMS_VERSION
from monitor.rights.catalog import load_postings
from monitor.rights.db import connect
from monitor.rights.licences import LicenceBook, load_book

log = logging.getLogger(__name__)

CATALOGUE_CHANNEL = "castwatch_catalogue"
LICENCES_CHANNEL = "castwatch_licences"
BATCH_WINDOW_S = 0.25  # gather notifications this long before rebuilding
MAX_BACKOFF_S = 30.0
FOLLOWER_NAME = "castwatch-catalogue-follower"  # application_name of the LISTEN connection


@dataclass(frozen=True)
class Snapshot:
    index: Index
    generation: int  # catalogue_state.generation the index corresponds to
    stale_tracks: int  # tracks fingerprinted with other engine parameters, left out


def _copy_fingerprints(conn: psycopg.Connection, builder: IndexBuilder, track_ids: list[int] | None) -> None:
    query = sql.SQL(
        "COPY (SELECT track_id, n_frames, keys, frames, spans, pitches FROM fingerprints"
        " WHERE params_version = {version}{only} ORDER BY track_id) TO STDOUT (FORMAT BINARY)"
    ).format(
        version=sql.Literal(PARAMS_VERSION),
        only=sql.SQL("") if track_ids is None else sql.SQL(" AND track_id = ANY({})").format(sql.Literal(track_ids)),
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(["int4", "int4", "bytea", "bytea", "bytea", "bytea"])
        for track_id, n_frames, keys, frames, spans, pitches in copy.rows():
            builder.add_postings(str(track_id), load_postings(keys, frames, spans, pitches, n_frames))


def _require_idle(conn: psycopg.Connection) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("a snapshot needs an idle connection: commit or roll back first")


def load_snapshot(conn: psycopg.Connection) -> Snapshot:
    """The whole catalogue's index, consistent with one catalogue generation.

    Needs an idle connection (the snapshot is its own transaction).
    """
    _require_idle(conn)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute(
            "SELECT generation, (SELECT count(*) FROM fingerprints WHERE params_version <> %s) FROM catalogue_state",
            (PARAMS_VERSION,),
        ).fetchone()
        assert row is not None
        builder = IndexBuilder()
        _copy_fingerprints(conn, builder, None)
    if row[1]:
        log.warning("%d tracks were fingerprinted with other engine parameters and are left out", row[1])
    return Snapshot(builder.freeze(), int(row[0]), int(row[1]))


def parse_changes(payloads: list[str]) -> tuple[set[int], set[int]]:
    """Net (added, removed) track ids from catalogue notifications, in order."""
    added: set[int] = set()
    removed: set[int] = set()
    for payload in payloads:
        sign, digits = payload[:1], payload[1:]
        if sign not in "+-" or not digits.isdigit():
            log.warning("ignoring malformed catalogue notification %r", payload)
            continue
        track = int(digits)
        if sign == "+":
            added.add(track)
        else:
            added.discard(track)
            removed.add(track)
    return added, removed


def apply_changes(conn: psycopg.Connection, index: Index, added: set[int], removed: set[int]) -> Index:
    """``index`` with ``removed`` dropped and ``added`` (re)loaded from the database."""
    present = set(index.track_ids)
    drop = {str(t) for t in removed | added} & present  # an update arrives as - then +
    if drop:
        index = index.without(drop)
    if added:
        builder = IndexBuilder()
        with conn.transaction():
            _copy_fingerprints(conn, builder, sorted(added))
        if builder.n_tracks:
            index = merge(index, builder.freeze())
    return index


class LiveCatalogue:
    """The catalogue's index and licence book, kept current; read ``.index`` and ``.book`` whenever you use them.

    Both are replaced whole (never mutated), so a reader keeps a consistent
    pair of arrays or rules for as long as it holds a reference. The
    optional callbacks run in the follower thread after each swap.
    """

    def __init__(
        self,
        url: str,
        on_index: Callable[[Index], None] | None = None,
        on_licences: Callable[[LicenceBook], None] | None = None,
    ) -> None:
        self._url = url
        self._on_index = on_index or (lambda index: None)
        self._on_licences = on_licences or (lambda book: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._index: Index = IndexBuilder().freeze()
        self._book = LicenceBook()
        self.generation = 0  # bumped on every index swap
        self.licence_generation = 0  # bumped on every licence book swap
        self.reloads = 0  # full reloads (1 at start, +1 per reconnect)
        self.last_error: str | None = None

    @property
    def index(self) -> Index:
        return self._index

    @property
    def book(self) -> LicenceBook:
        return self._book

    def start(self) -> "LiveCatalogue":
        """Load the snapshot (in the caller's thread, so errors surface here), then follow."""
        self._conn = self._listen()
        self._reload(self._conn)
        self._thread = threading.Thread(target=self._follow, name="castwatch-catalogue", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> "LiveCatalogue":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> psycopg.Connection:
        conn = connect(self._url, autocommit=True, purpose=FOLLOWER_NAME)
        conn.execute(f"LISTEN {CATALOGUE_CHANNEL}")
        conn.execute(f"LISTEN {LICENCES_CHANNEL}")
        return conn

    def _swap(self, index: Index) -> None:
        self._index = index
        self.generation += 1
        self._on_index(index)

    def _reload_licences(self, conn: psycopg.Connection) -> None:
        self._book = load_book(conn)
        self.licence_generation += 1
        self._on_licences(self._book)

    def _reload(self, conn: psycopg.Connection) -> None:
        snapshot = load_snapshot(conn)
        self.reloads += 1
        self._swap(snapshot.index)
        self._reload_licences(conn)
        log.info(
            "catalogue loaded: %d tracks, %d postings (generation %d)",
            snapshot.index.n_tracks,
            snapshot.index.n_postings,
            snapshot.generation,
        )

    def _follow(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._listen()
                    self._reload(self._conn)
                    log.warning("catalogue connection restored; index reloaded in full")
                self._follow_once(self._conn)
                backoff = 0.5
                self.last_error = None
            except psycopg.Error as e:
                self.last_error = str(e)
                log.warning("catalogue follower lost its connection (%s); retrying in %.1f s", e, backoff)
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:  # a bug must not silently freeze the index: log it, reload, go on
                log.exception("catalogue follower failed; reloading the index in full")
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _follow_once(self, conn: psycopg.Connection) -> None:
        payloads: list[str] = []
        licences = False
        first = conn.notifies(timeout=0.5, stop_after=1)
        for note in first:
            payloads, licences = self._collect(note, payloads, licences)
        if not payloads and not licences:
            return
        deadline = time.monotonic() + BATCH_WINDOW_S
        while (remaining := deadline - time.monotonic()) > 0:
            for note in conn.notifies(timeout=remaining):
                payloads, licences = self._collect(note, payloads, licences)
        if payloads:
            added, removed = parse_changes(payloads)
            index = apply_changes(conn, self._index, added, removed)
            self._swap(index)
            log.info("catalogue updated: +%d -%d tracks, %d in the index", len(added), len(removed), index.n_tracks)
        if licences:
            self._reload_licences(conn)

    @staticmethod
    def _collect(note: psycopg.Notify, payloads: list[str], licences: bool) -> tuple[list[str], bool]:
        if note.channel == CATALOGUE_CHANNEL:
            payloads.append(note.payload)
        elif note.channel == LICENCES_CHANNEL:
            licences = True
        return payloads, licences

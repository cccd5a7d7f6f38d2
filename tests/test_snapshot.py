"""Index snapshots from PostgreSQL and live following of catalogue changes (real server)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import pytest

from fingerprint import index as index_mod
from fingerprint.cli import main as fingerprint_main
from fingerprint.index import Index
from monitor.rights import catalog
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.db import DatabaseError
from monitor.rights.licences import LicenceSpec, Stream, add_licence, add_stream, revoke_licence
from monitor.rights.localdb import free_port
from monitor.rights.snapshot import FOLLOWER_NAME, LiveCatalogue, apply_changes, load_snapshot, parse_changes

ACME = TrackMeta(owners=(Owner("Acme"),))
ARRAYS = ("directory", "records", "starts")


def assert_same(a: Index, b: Index) -> None:
    assert a.track_ids == b.track_ids
    for name in ARRAYS:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


def relabel(index: Index, names: dict[str, str]) -> Index:
    """The same index with other track ids (order kept)."""
    return dataclasses.replace(index, track_ids=tuple(names[t] for t in index.track_ids))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``condition`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_snapshot_equals_the_on_disk_index_of_the_same_files(
    conn: psycopg.Connection, recordings: list[Path], tmp_path: Path
) -> None:
    report = catalog.add(conn, recordings, {}, ACME)
    snapshot = load_snapshot(conn)
    assert snapshot.stale_tracks == 0 and snapshot.generation == len(recordings)
    assert fingerprint_main(["index", str(tmp_path / "idx"), *map(str, recordings), "--quiet", "--jobs", "1"]) == 0
    on_disk = index_mod.load(tmp_path / "idx")
    names = {str(path): str(track_id) for path, track_id in report.added}
    assert_same(snapshot.index, relabel(on_disk, names))


def test_snapshot_of_an_empty_catalogue(conn: psycopg.Connection) -> None:
    snapshot = load_snapshot(conn)
    assert snapshot.index.n_tracks == 0 and snapshot.index.n_postings == 0 and snapshot.generation == 0


def test_snapshot_leaves_out_tracks_of_other_engine_parameters(conn: psycopg.Connection, recordings: list[Path]) -> None:
    catalog.add(conn, recordings[:2], {}, ACME)
    conn.execute("UPDATE fingerprints SET params_version = params_version - 1 WHERE track_id = 1")
    conn.commit()
    snapshot = load_snapshot(conn)
    assert snapshot.stale_tracks == 1 and snapshot.index.track_ids == ("2",)


def test_parse_changes_nets_out_in_order() -> None:
    assert parse_changes(["+1", "+2", "-1", "-3", "+3", "junk", "+x"]) == ({2, 3}, {1, 3})


def test_apply_changes_equals_a_fresh_snapshot(conn: psycopg.Connection, recordings: list[Path]) -> None:
    catalog.add(conn, recordings[:4], {}, ACME)
    before = load_snapshot(conn).index
    catalog.remove(conn, 2)
    catalog.add(conn, recordings[4:], {}, ACME)
    after = apply_changes(conn, before, {5, 6}, {2})
    fresh = load_snapshot(conn).index
    assert sorted(after.track_ids) == sorted(fresh.track_ids) == ["1", "3", "4", "5", "6"]
    for track in fresh.track_ids:  # same postings per track, wherever it sits on the frame axis
        a, b = after.without(set(after.track_ids) - {track}), fresh.without(set(fresh.track_ids) - {track})
        assert_same(a, b)


@pytest.fixture
def live(db_url: str) -> LiveCatalogue:
    with LiveCatalogue(db_url) as catalogue:
        yield catalogue


def test_live_catalogue_follows_additions_and_removals_within_5_s(
    live: LiveCatalogue, db_url: str, recordings: list[Path]
) -> None:
    assert live.index.n_tracks == 0
    with psycopg.connect(db_url) as writer:
        catalog.add(writer, recordings[:2], {}, ACME)
        took = wait_for(lambda: live.index.n_tracks == 2)
        assert took < 5.0
        assert_same(live.index, load_snapshot(writer).index)
        catalog.remove(writer, 1)
        wait_for(lambda: live.index.track_ids == ("2",))
        catalog.add(writer, recordings[:1], {}, ACME)  # restored
        wait_for(lambda: sorted(live.index.track_ids) == ["1", "2"])
    assert live.reloads == 1


def test_live_licence_book_follows_licence_changes_within_5_s(
    live: LiveCatalogue, db_url: str, recordings: list[Path]
) -> None:
    at = datetime(2026, 6, 1, tzinfo=timezone.utc)
    with psycopg.connect(db_url) as writer:
        ((_, track),) = catalog.add(writer, recordings[:1], {}, ACME).added
        add_stream(writer, Stream("fr-1", "Un", "Radio Un", "FR"))
        wait_for(lambda: "fr-1" in live.book.streams)
        assert not live.book.decide("fr-1", track, at).licensed
        licence = add_licence(writer, LicenceSpec("Radio Un", "blanket", ("FR",), at - timedelta(days=1), holder="Acme"))
        took = wait_for(lambda: live.book.decide("fr-1", track, at).licensed)
        assert took < 5.0
        revoke_licence(writer, licence, at - timedelta(hours=1))
        wait_for(lambda: not live.book.decide("fr-1", track, at).licensed)


def test_live_catalogue_reloads_after_losing_its_connection(
    live: LiveCatalogue, db_url: str, recordings: list[Path]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as admin:
        catalog.add(admin, recordings[:1], {}, ACME)
        wait_for(lambda: live.index.n_tracks == 1)
        # Kill the listener's backend, then change the catalogue while it is away.
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (FOLLOWER_NAME,),
        ).fetchall()
        assert killed
        catalog.add(admin, recordings[1:3], {}, ACME)
        wait_for(lambda: live.index.n_tracks == 3, timeout=10.0)
        assert live.reloads >= 2
        assert_same(live.index, load_snapshot(admin).index)


def test_live_catalogue_start_fails_clearly_without_a_database() -> None:
    with pytest.raises(DatabaseError, match="cannot connect"):
        LiveCatalogue(f"postgresql://castwatch@127.0.0.1:{free_port()}/x").start()


def test_index_swaps_are_atomic_for_readers(live: LiveCatalogue, db_url: str, recordings: list[Path]) -> None:
    """A reader holding ``.index`` keeps a consistent index while the follower swaps in new ones."""
    seen: list[tuple[int, bool]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            index = live.index
            consistent = int(index.directory[-1]) == index.n_postings and len(index.starts) == index.n_tracks + 1
            seen.append((index.n_tracks, consistent))
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_for(lambda: bool(seen))  # the reader has seen the empty index
        with psycopg.connect(db_url) as writer:
            for i in range(3):
                catalog.add(writer, recordings[i : i + 1], {}, ACME)
            # ... and, before it stops, the last one (it may not have run since the swap).
            wait_for(lambda: seen[-1][0] == 3)
    finally:
        stop.set()
        thread.join()
    counts = [n for n, _ in seen]
    assert all(ok for _, ok in seen)
    assert counts == sorted(counts) and len(set(counts)) >= 2

"""Catalogue ingestion against a real PostgreSQL: idempotence, bad files, interruption, metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf

from fingerprint.audio import decode
from fingerprint.index import Postings
from fingerprint.landmarks import extract
from fingerprint.spectrum import n_frames_for
from monitor import cli
from monitor.rights import catalog
from monitor.rights.catalog import CatalogError, Owner, TrackMeta

ACME = TrackMeta(owners=(Owner("Acme"),))


def counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM tracks), (SELECT count(*) FROM fingerprints), (SELECT count(*) FROM ownership)"
    ).fetchone()
    conn.commit()
    assert row is not None
    return row


def test_add_stores_tracks_owners_and_exact_fingerprints(conn: psycopg.Connection, recordings: list[Path]) -> None:
    report = catalog.add(conn, recordings[:3], {}, ACME)
    assert [p for p, _ in report.added] == recordings[:3] and not report.failed
    assert counts(conn) == (3, 3, 3)
    assert report.audio_seconds == pytest.approx(90.0, abs=0.1)
    for path, track_id in report.added:
        row = conn.execute(
            "SELECT n_frames, keys, frames, spans, pitches, t.title, t.duration_s, t.content_sha256"
            " FROM fingerprints f JOIN tracks t ON t.id = f.track_id WHERE track_id = %s",
            (track_id,),
        ).fetchone()
        stored = catalog.load_postings(row[1], row[2], row[3], row[4], row[0])
        samples = decode(path)
        expected = Postings.of(extract(samples), n_frames_for(samples.shape[0]))
        for name in ("keys", "frames", "spans", "pitches"):
            np.testing.assert_array_equal(getattr(stored, name), getattr(expected, name), err_msg=name)
        assert stored.n_frames == expected.n_frames
        assert row[5] == path.stem and row[6] == pytest.approx(30.0, abs=0.01)
        assert bytes(row[7]) == catalog.content_hash(path)


def test_adding_again_does_nothing_and_says_so(conn: psycopg.Connection, recordings: list[Path], tmp_path: Path) -> None:
    first = catalog.add(conn, recordings[:2], {}, ACME)
    generation = conn.execute("SELECT generation FROM catalogue_state").fetchone()
    copy = tmp_path / "renamed.wav"
    shutil.copy(recordings[0], copy)  # same content under another name
    second = catalog.add(conn, [recordings[1], copy, recordings[2]], {}, ACME)
    assert [p for p, _ in second.added] == [recordings[2]]
    assert sorted(second.already) == sorted([(recordings[1], first.added[1][1]), (copy, first.added[0][1])])
    assert counts(conn) == (3, 3, 3)
    assert conn.execute("SELECT generation FROM catalogue_state").fetchone()[0] == generation[0] + 1


def test_same_content_twice_in_one_run_is_added_once(conn: psycopg.Connection, recordings: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "again.wav"
    shutil.copy(recordings[0], copy)
    report = catalog.add(conn, [recordings[0], copy], {}, ACME)
    assert len(report.added) == 1 and report.already == [(copy, None)]
    assert counts(conn) == (1, 1, 1)


def test_corrupt_and_unsupported_files_are_reported_and_skipped(
    conn: psycopg.Connection, recordings: list[Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    text = tmp_path / "notes.ogg"
    text.write_text("not audio at all")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(100, np.float32), 8000)
    report = catalog.add(conn, [corrupt, recordings[0], text, short, recordings[1]], {}, ACME)
    assert [p for p, _ in report.added] == [recordings[0], recordings[1]]
    failed = dict(report.failed)
    assert set(failed) == {corrupt, text, short}
    assert str(corrupt) in failed[corrupt] and "too short" in failed[short]
    assert counts(conn) == (2, 2, 2)


def test_interrupted_ingest_leaves_no_half_track_and_reruns(
    conn: psycopg.Connection, db_url: str, recordings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "BATCH_TRACKS", 2)
    real = catalog.fingerprint_path
    calls = 0

    def dies_on_the_fifth(path: Path) -> catalog.Fingerprinted:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(catalog, "fingerprint_path", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        catalog.add(conn, recordings, {}, ACME)
    conn.rollback()
    assert counts(conn) == (4, 4, 4)  # two whole batches; the third never started writing
    monkeypatch.setattr(catalog, "fingerprint_path", real)
    report = catalog.add(conn, recordings, {}, ACME)
    assert len(report.already) == 4 and len(report.added) == 2
    assert counts(conn) == (6, 6, 6)


def test_failure_while_writing_a_batch_rolls_the_whole_batch_back(
    conn: psycopg.Connection, recordings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "BATCH_TRACKS", 2)
    real = catalog._write_batch
    batches = 0

    def second_batch_fails(c: psycopg.Connection, batch: list) -> list[int]:
        nonlocal batches
        batches += 1
        if batches == 2:
            c.execute("SELECT 1")  # mid-transaction work, then the connection dies
            c.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return real(c, batch)

    monkeypatch.setattr(catalog, "_write_batch", second_batch_fails)
    with pytest.raises(psycopg.OperationalError):
        catalog.add(conn, recordings[:4], {}, ACME)
    with psycopg.connect(conn.info.dsn) as fresh:
        assert counts(fresh) == (2, 2, 2)


def test_lost_connection_is_retried_on_a_new_one(
    conn: psycopg.Connection, db_url: str, recordings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "BATCH_TRACKS", 2)
    monkeypatch.setattr(catalog, "RETRY_BACKOFF_S", 0.01)
    real = catalog._write_batch
    batches = 0

    def killed_then_lost_ack(c: psycopg.Connection, batch: list) -> list[int]:
        nonlocal batches
        batches += 1
        if batches == 2:  # the connection dies mid-batch: nothing of it was written
            c.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        ids = real(c, batch)
        if batches == 4:  # committed, but the acknowledgement is lost
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return ids

    monkeypatch.setattr(catalog, "_write_batch", killed_then_lost_ack)
    opened: list[psycopg.Connection] = []

    def reconnect() -> psycopg.Connection:
        opened.append(psycopg.connect(db_url))
        return opened[-1]

    report = catalog.add(conn, recordings, {}, ACME, reconnect=reconnect)
    assert [p for p, _ in report.added] == recordings and not report.failed
    assert len(opened) == 2
    assert counts(opened[-1]) == (6, 6, 6)  # each track exactly once
    ids = [i for _, i in report.added]
    assert sorted(ids) == sorted(set(ids))
    for c in opened:
        c.close()


def test_removed_track_leaves_matching_keeps_its_row_and_can_come_back(
    conn: psycopg.Connection, recordings: list[Path]
) -> None:
    (_, track_id), = catalog.add(conn, recordings[:1], {}, ACME).added
    catalog.remove(conn, track_id)
    assert counts(conn) == (1, 0, 1)
    info = catalog.show(conn, track_id)
    assert info.removed and info.n_postings == 0
    assert list(catalog.list_tracks(conn)) == []
    assert [t.id for t in catalog.list_tracks(conn, include_removed=True)] == [track_id]
    with pytest.raises(CatalogError, match="already removed"):
        catalog.remove(conn, track_id)
    with pytest.raises(CatalogError, match="no track 999"):
        catalog.remove(conn, 999)
    report = catalog.add(conn, recordings[:1], {}, ACME)
    assert report.restored == [(recordings[0], track_id)]
    assert counts(conn) == (1, 1, 1) and not catalog.show(conn, track_id).removed


def test_manifest_metadata_and_co_owners(conn: psycopg.Connection, recordings: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    for p in recordings[:2]:
        shutil.copy(p, folder / p.name)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,title,artist,isrc,holder,share,territory\n"
        f"music/{recordings[0].name},Blue Moon,The Cats,us-abc-26-00001,Acme,60,\n"
        f"music/{recordings[0].name},Blue Moon,The Cats,us-abc-26-00001,Bravo,40,\n"
        f"music/{recordings[0].name},Blue Moon,The Cats,us-abc-26-00001,Bravo,100,DE\n"
        f"music/{recordings[1].name},Red Sun,,,,,\n"
    )
    metas = catalog.read_manifest(manifest)
    report = catalog.add(conn, sorted(metas), metas, TrackMeta(owners=(Owner("Default Label"),)))
    assert len(report.added) == 2
    first = catalog.show(conn, report.added[0][1])
    assert (first.title, first.artist, first.isrc) == ("Blue Moon", "The Cats", "USABC2600001")
    assert first.owners == (("Acme", "WW", 60.0), ("Bravo", "DE", 100.0), ("Bravo", "WW", 40.0))
    second = catalog.show(conn, report.added[1][1])
    assert second.title == "Red Sun" and second.owners == (("Default Label", "WW", 100.0),)
    assert [t.id for t in catalog.list_tracks(conn, holder="Bravo")] == [first.id]


@pytest.mark.parametrize(
    "body, message",
    [
        ("title\nx\n", "'path' column"),
        ("path,color\na.wav,red\n", "unknown manifest columns"),
        ("path,isrc\na.wav,nonsense\n", "manifest.csv:2: ISRC 'nonsense' is not valid"),
        ("path,holder,share\na.wav,Acme,lots\n", "share 'lots' is not a number"),
        ("path,holder,territory\na.wav,Acme,France\n", "territory 'France'"),
        ("path,title\na.wav,One\na.wav,Two\n", "appears again with different metadata"),
        ("path\n\n,\n", "empty path"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path: Path, body: str, message: str) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(body)
    with pytest.raises(CatalogError, match=message):
        catalog.read_manifest(manifest)


def test_shares_over_100_percent_are_refused(conn: psycopg.Connection, recordings: list[Path]) -> None:
    meta = TrackMeta(owners=(Owner("A", 60), Owner("B", 50)))
    report = catalog.add(conn, recordings[:1], {}, meta)
    assert not report.added and "more than 100" in report.failed[0][1]
    assert counts(conn) == (0, 0, 0)


def test_cli_catalog_add_ls_show_rm(
    db_url: str, recordings: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASTWATCH_DATABASE_URL", db_url)
    folder = tmp_path / "in"
    folder.mkdir()
    for p in recordings[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.mp3").write_bytes(b"\xff\xfb" + b"\x00" * 50)
    code = cli.main(["catalog", "add", str(folder), "--holder", "Acme", "--jobs", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 1  # something failed, the rest went in
    assert "broken.mp3" in err and "3 added, 0 restored, 0 already in the catalogue, 1 failed" in err
    assert len(out.splitlines()) == 3
    code = cli.main(["catalog", "add", str(folder / recordings[0].name), "--holder", "Acme"])
    _, err = capsys.readouterr()
    assert code == 0 and "already in the catalogue as track" in err
    assert cli.main(["catalog", "ls"]) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "Acme 100%" in out
    assert cli.main(["catalog", "show", "2", "--json"]) == 0
    assert '"holders": [{"name": "Acme", "territory": "WW", "share": 100.0}]' in capsys.readouterr()[0]
    assert cli.main(["catalog", "rm", "2", "99"]) == 1
    _, err = capsys.readouterr()
    assert "track 2 removed" in err and "no track 99" in err
    assert cli.main(["catalog", "add", str(folder / recordings[0].name)]) == 1
    assert "no rights-holder given" in capsys.readouterr()[1]
    assert cli.main(["catalog", "add", str(folder), "--holder", "A", "--title", "T"]) == 1
    assert "describe one file" in capsys.readouterr()[1]

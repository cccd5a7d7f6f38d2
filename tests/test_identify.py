"""``castwatch identify``, streams and licences from the command line, against a real PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf

from fingerprint.params import SAMPLE_RATE
from fingerprint.synth import music
from monitor import cli
from monitor.rights import catalog
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.licences import load_book


@pytest.fixture
def run(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("CASTWATCH_DATABASE_URL", db_url)
    monkeypatch.setenv("CASTWATCH_CACHE_DIR", str(tmp_path / "cache"))

    def invoke(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def catalogue(conn: psycopg.Connection, recordings: list[Path]) -> dict[str, int]:
    """Two recordings of Acme, one of Acme 50 % and Bravo 50 %."""
    ids = {}
    for path, owners in zip(recordings[:3], [(Owner("Acme"),), (Owner("Acme"),), (Owner("Acme", 50), Owner("Bravo", 50))]):
        meta = TrackMeta(title=path.stem.title(), artist="Synth", isrc=None, owners=owners)
        ((_, track_id),) = catalog.add(conn, [path], {}, meta).added
        ids[path.stem] = track_id
    return ids


def excerpt(recording: Path, out: Path, start_s: float, seconds: float, speed: float = 1.0) -> Path:
    samples, rate = sf.read(recording, dtype="float32")
    part = samples[int(start_s * rate) : int((start_s + seconds) * rate)]
    if speed != 1.0:
        n = int(round(part.shape[0] / speed))
        part = np.interp(np.arange(n) * speed, np.arange(part.shape[0]), part).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.05 * float(np.std(part)), part.shape).astype(np.float32)
    sf.write(out, part + noise, rate)
    return out


def test_identify_prints_recording_holders_and_times(run, catalogue: dict[str, int], recordings: list[Path], tmp_path: Path) -> None:
    query = excerpt(recordings[2], tmp_path / "q.wav", 12.0, 10.0, speed=1.03)
    code, out, _ = run("identify", str(query), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["query"] == str(query)
    (match,) = result["matches"]
    assert match["track_id"] == catalogue["track-003"] and match["title"] == "Track-003" and match["artist"] == "Synth"
    assert match["holders"] == [{"name": "Acme", "territory": "WW", "share": 50.0}, {"name": "Bravo", "territory": "WW", "share": 50.0}]
    assert match["ref_start"] == pytest.approx(12.0 + match["query_start"] * 1.03, abs=0.3)
    assert match["speed"] == pytest.approx(1.03, abs=0.01)
    assert "licensed" not in match  # no stream given
    code, out, _ = run("identify", str(query))
    assert code == 0 and "Synth - Track-003" in out and "Acme 50%, Bravo 50%" in out
    assert re.search(r"recording 12\.\d-2\d\.\d s, speed x1\.0[23]", out)


def test_identify_with_a_stream_says_whether_it_was_licensed(run, catalogue: dict[str, int], recordings: list[Path], tmp_path: Path) -> None:
    query = excerpt(recordings[2], tmp_path / "q.wav", 5.0, 10.0)
    assert run("streams", "add", "fr-1", "--licensee", "Radio Un", "--territory", "fr", "--timezone", "Europe/Paris")[0] == 0
    code, out, _ = run("identify", str(query), "--stream", "fr-1", "--at", "2026-06-01T12:00:00Z", "--json")
    match = json.loads(out)["matches"][0]
    assert code == 0 and match["licensed"] is False and "Acme, Bravo" in match["licence_reason"]
    assert run("licences", "add", "--licensee", "Radio Un", "--holder", "Acme", "--territory", "FR", "--from", "2026-01-01")[0] == 0
    code, out, _ = run("identify", str(query), "--stream", "fr-1", "--at", "2026-06-01T12:00:00Z", "--json")
    match = json.loads(out)["matches"][0]
    assert match["licensed"] is False and "Bravo" in match["licence_reason"] and "Acme" not in match["licence_reason"]
    code, out, _ = run("licences", "add", "--licensee", "Radio Un", "--track", str(catalogue["track-003"]),
                       "--territory", "WW", "--from", "2026-05-01", "--until", "2026-07-01")  # fmt: skip
    licence_id = out.strip()
    code, out, _ = run("identify", str(query), "--stream", "fr-1", "--at", "2026-06-01T12:00:00Z")
    assert "LICENSED: licensed to Radio Un in FR" in out
    code, out, _ = run("identify", str(query), "--stream", "fr-1", "--at", "2026-07-01T00:00:00Z")
    assert "NOT LICENSED" in out  # the per-track licence ended
    assert run("licences", "revoke", licence_id, "--at", "2026-05-15")[0] == 0
    code, out, _ = run("identify", str(query), "--stream", "fr-1", "--at", "2026-06-01T12:00:00Z")
    assert "NOT LICENSED" in out
    code, out, _ = run("identify", str(query), "--stream", "fr-1", "--at", "2026-05-14T12:00:00Z")
    assert "LICENSED: licensed" in out  # before the revocation
    code, _, err = run("identify", str(query), "--stream", "nope")
    assert code == 1 and "no stream 'nope'" in err


def test_identify_unknown_audio_and_bad_files(run, catalogue: dict[str, int], tmp_path: Path) -> None:
    other = tmp_path / "other.wav"
    sf.write(other, music(10.0, 999), SAMPLE_RATE)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC nonsense")
    code, out, err = run("identify", str(other), str(bad), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert lines[0] == {"query": str(other), "matches": []}
    assert lines[1]["query"] == str(bad) and "bad.flac" in lines[1]["error"]
    assert "error:" in err and "bad.flac" in err


def test_identify_cache_follows_catalogue_changes(
    run, conn: psycopg.Connection, catalogue: dict[str, int], recordings: list[Path], tmp_path: Path
) -> None:
    query = excerpt(recordings[3], tmp_path / "q.wav", 3.0, 10.0)
    code, out, _ = run("identify", str(query), "--json")
    assert json.loads(out)["matches"] == []
    caches = list((tmp_path / "cache" / "index").glob("*/g*"))
    assert [c.name for c in caches] == ["g3"]
    assert run("identify", str(query))[0] == 0  # served from the cache
    ((_, track_id),) = catalog.add(conn, [recordings[3]], {}, TrackMeta(owners=(Owner("Acme"),))).added
    code, out, _ = run("identify", str(query), "--json")
    assert [m["track_id"] for m in json.loads(out)["matches"]] == [track_id]
    assert [c.name for c in (tmp_path / "cache" / "index").glob("*/g*")] == ["g4"]  # the stale one is gone
    catalog.remove(conn, track_id)
    code, out, _ = run("identify", str(query), "--json")
    assert json.loads(out)["matches"] == []


def test_streams_and_licences_commands(run, conn: psycopg.Connection, catalogue: dict[str, int], tmp_path: Path) -> None:
    assert run("streams", "add", "fr-1", "--licensee", "Radio Un", "--territory", "FR", "--name", "Radio Un Paris")[0] == 0
    code, _, err = run("streams", "add", "fr-1", "--licensee", "X", "--territory", "FR")
    assert code == 1 and "already exists (use --replace" in err
    assert run("streams", "add", "fr-1", "--licensee", "Radio Un SA", "--territory", "FR", "--replace")[0] == 0
    code, _, err = run("streams", "add", "x", "--licensee", "X", "--territory", "WW")
    assert code == 1 and "one territory" in err
    code, _, err = run("streams", "add", "x", "--licensee", "X", "--territory", "FR", "--timezone", "Mars/Olympus")
    assert code == 1 and "Mars/Olympus" in err
    code, _, err = run("streams", "add", "bad id!", "--licensee", "X", "--territory", "FR")
    assert code == 1 and "bad id!" in err
    csv_streams = tmp_path / "streams.csv"
    csv_streams.write_text("id,name,licensee,territory,timezone,source_url\nde-1,Eins,Radio Eins,DE,Europe/Berlin,http://x/eins\n")
    assert run("streams", "import", str(csv_streams))[0] == 0
    code, out, _ = run("streams", "ls", "--json")
    streams = [json.loads(line) for line in out.splitlines()]
    assert [(s["id"], s["licensee"], s["territory"]) for s in streams] == [("de-1", "Radio Eins", "DE"), ("fr-1", "Radio Un SA", "FR")]

    licences_csv = tmp_path / "licences.csv"
    licences_csv.write_text(
        "licensee,kind,holder,track,territories,valid_from,valid_until,note\n"
        "Radio Eins,blanket,Bravo,,DE AT,2026-01-01,,annual deal\n"
        f"Radio Eins,per-track,,{catalogue['track-001']},WW,2026-01-01,2027-01-01,\n"
    )
    assert run("licences", "import", str(licences_csv))[0] == 0
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("licensee,kind,holder,track,territories,valid_from\nX,blanket,Acme,,FR,2026-01-01\nY,blanket,,,FR,2026-01-01\n")
    code, _, err = run("licences", "import", str(bad_csv))
    assert code == 1 and "names a holder" in err
    code, out, _ = run("licences", "ls", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["licensee"], r["kind"], r["holder"], r["territories"]) for r in rows] == [
        ("Radio Eins", "blanket", "Bravo", ["AT", "DE"]),
        ("Radio Eins", "per-track", None, ["WW"]),
    ]  # the bad file added nothing
    code, _, err = run("licences", "add", "--licensee", "X", "--territory", "FR", "--from", "2026-01-01")
    assert code == 1 and "names a holder" in err
    code, _, err = run("licences", "add", "--licensee", "X", "--track", "999", "--territory", "FR", "--from", "2026-01-01")
    assert code == 1 and "no track 999" in err
    code, _, err = run("licences", "add", "--licensee", "X", "--holder", "A", "--territory", "FR", "--from", "2026-02-01", "--until", "2026-01-01")
    assert code == 1 and "ends" in err
    assert run("licences", "revoke", str(rows[0]["id"]))[0] == 0
    code, _, err = run("licences", "revoke", str(rows[0]["id"]))
    assert code == 1 and "already revoked" in err
    code, out, _ = run("holders", "ls", "--json")
    assert [(h["name"], h["tracks"]) for h in map(json.loads, out.splitlines())] == [("Acme", 3), ("Bravo", 1)]

    book = load_book(conn)
    assert set(book.streams) == {"fr-1", "de-1"} and len(book.licences["Radio Eins"]) == 2
    assert run("streams", "rm", "de-1")[0] == 0
    code, _, err = run("streams", "rm", "de-1")
    assert code == 1 and "no stream 'de-1'" in err


def test_cli_main_job_on_local_files(run, recordings: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    for p in recordings[:2]:
        shutil.copy(p, folder / p.name)
    assert run("catalog", "add", str(folder), "--holder", "Acme", "-q")[0] == 0
    query = excerpt(recordings[1], tmp_path / "q.wav", 0.0, 5.0)
    code, out, _ = run("identify", str(query))
    assert code == 0 and "track-002" in out.lower()

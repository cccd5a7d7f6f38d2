"""The offline CLI (``python -m fingerprint index|match``) and its JSON contract (DESIGN.md).

Most runs are in-process through ``fingerprint.cli.main``; a few go through a
real ``python -m fingerprint`` subprocess to check the entry point, exit codes
and that each query's line reaches a pipe before the next query is done.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from fingerprint import cli
from fingerprint.index import Index, load
from fingerprint.params import N_FFT, SAMPLE_RATE
from fingerprint.synth import music

CATALOGUE_SECONDS = {1: 20.0, 2: 24.0, 3: 27.0, 4: 30.0}  # seed -> duration
MATCH_KEYS = {"track", "score", "query_start", "query_end", "ref_start", "ref_end", "speed"}
REPO = Path(__file__).resolve().parents[1]


def write_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return path


def excerpt(path: Path, out: Path, start_s: float, seconds: float) -> Path:
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    a = int(start_s * SAMPLE_RATE)
    return write_wav(out, samples[a : a + int(seconds * SAMPLE_RATE)])


def assert_same_index(a: Index, b: Index) -> None:
    assert a.track_ids == b.track_ids
    for name in ("directory", "records", "starts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def json_lines(out: str) -> list[dict]:
    lines = out.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]


def child_env() -> dict[str, str]:
    """The environment for ``python -m fingerprint`` without PYTHONUNBUFFERED, which would hide missing flushes."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fingerprint", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=child_env(),
    )


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four procedural tracks (seeds 1..4) in one directory."""
    root = tmp_path_factory.mktemp("catalogue")
    for seed, seconds in CATALOGUE_SECONDS.items():
        write_wav(root / f"track{seed}.wav", music(seconds, seed))
    return root


def track(catalogue: Path, seed: int) -> str:
    """The track id the CLI gives a file found by scanning ``catalogue``: its path as joined."""
    return os.path.join(str(catalogue), f"track{seed}.wav")


@pytest.fixture(scope="module")
def index_path(catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("indexes") / "cat.idx"
    assert cli.main(["index", str(path), str(catalogue), "--jobs", "1", "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def queries(catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str | None, float]]:
    """name -> (query file, expected track id or None, reference second where the query starts)."""
    root = tmp_path_factory.mktemp("queries")
    return {
        "t3": (excerpt(catalogue / "track3.wav", root / "q_t3.wav", 11.0, 8.0), track(catalogue, 3), 11.0),
        "t1": (excerpt(catalogue / "track1.wav", root / "q_t1.wav", 4.5, 8.0), track(catalogue, 1), 4.5),
        "t4": (excerpt(catalogue / "track4.wav", root / "q_t4.wav", 20.0, 8.0), track(catalogue, 4), 20.0),
        "other": (write_wav(root / "q_other.wav", music(8.0, seed=77)), None, 0.0),
    }


def assert_contract(result: dict, query: Path) -> None:
    assert result["query"] == str(query)
    assert "error" not in result
    assert isinstance(result["matches"], list)
    for m in result["matches"]:
        assert MATCH_KEYS <= set(m), f"missing keys: {MATCH_KEYS - set(m)}"
        assert isinstance(m["track"], str)
        for key in MATCH_KEYS - {"track"}:
            assert isinstance(m[key], (int, float)) and not isinstance(m[key], bool), key
        assert 0.0 < m["score"] <= 1.0
        assert 0.0 <= m["query_start"] < m["query_end"]
        assert m["ref_start"] < m["ref_end"]


def assert_found(result: dict, expected_track: str, ref_offset: float) -> None:
    assert result["matches"], f"no match for {result['query']}"
    best = result["matches"][0]
    assert best["track"] == expected_track
    truth = ref_offset + best["query_start"]  # the query is an unaltered excerpt: speed 1
    assert abs(best["ref_start"] - truth) <= 1.5, (best, truth)
    assert best["speed"] == pytest.approx(1.0, abs=0.03)


# --- index + match -----------------------------------------------------------------------------------


def test_index_holds_the_catalogue(index_path: Path, catalogue: Path) -> None:
    index = load(index_path)
    assert index.track_ids == tuple(track(catalogue, s) for s in CATALOGUE_SECONDS)
    assert index.n_postings > 0
    audio_seconds = sum(CATALOGUE_SECONDS.values())  # each track may lose up to one window at its end
    assert audio_seconds - len(CATALOGUE_SECONDS) * N_FFT / SAMPLE_RATE <= index.seconds <= audio_seconds


def test_match_json_finds_the_excerpt(index_path: Path, queries: dict, capsys: pytest.CaptureFixture[str]) -> None:
    query, expected, offset = queries["t3"]
    assert cli.main(["match", str(index_path), str(query), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    (result,) = json_lines(out)
    assert_contract(result, query)
    assert_found(result, expected, offset)


def test_match_json_unknown_audio_gives_empty_matches(
    index_path: Path, queries: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    query, _, _ = queries["other"]
    assert cli.main(["match", str(index_path), str(query), "--json"]) == 0
    (result,) = json_lines(capsys.readouterr().out)
    assert result == {"query": str(query), "matches": []}


def test_match_several_queries_one_line_each_in_order(
    index_path: Path, queries: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    order = ["t4", "other", "t1", "t3"]
    paths = [str(queries[name][0]) for name in order]
    assert cli.main(["match", str(index_path), *paths, "--json"]) == 0
    results = json_lines(capsys.readouterr().out)
    assert [r["query"] for r in results] == paths
    for name, result in zip(order, results, strict=True):
        query, expected, offset = queries[name]
        assert_contract(result, query)
        if expected is None:
            assert result["matches"] == []
        else:
            assert_found(result, expected, offset)


def test_match_flushes_each_line_before_the_next_query(
    index_path: Path, queries: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []

    class Recorder:
        def write(self, text: str) -> int:
            events.append(("write", text))
            return len(text)

        def flush(self) -> None:
            events.append(("flush", ""))

    real = cli.fingerprint_file

    def spy(source: str, *args: object) -> cli.Extracted:
        events.append(("decode", source))
        return real(source, *args)

    monkeypatch.setattr(cli, "fingerprint_file", spy)
    monkeypatch.setattr(sys, "stdout", Recorder())
    paths = [str(queries[name][0]) for name in ("t1", "other", "t3")]
    assert cli.main(["match", str(index_path), *paths, "--json"]) == 0

    decodes = [i for i, (kind, _) in enumerate(events) if kind == "decode"]
    assert [events[i][1] for i in decodes] == paths
    for n, (this, following) in enumerate(zip(decodes, [*decodes[1:], len(events)], strict=True)):
        between = events[this:following]
        written = "".join(text for kind, text in between if kind == "write")
        assert json.loads(written)["query"] == paths[n]
        last_write = max(i for i, (kind, _) in enumerate(between) if kind == "write")
        assert any(kind == "flush" for kind, _ in between[last_write:]), f"line {n} not flushed before the next query"


def test_match_human_output(index_path: Path, queries: dict, capsys: pytest.CaptureFixture[str]) -> None:
    found, _, _ = queries["t1"]
    other, _, _ = queries["other"]
    assert cli.main(["match", str(index_path), str(found), str(other)]) == 0
    out = capsys.readouterr().out
    assert "track1.wav" in out
    assert f"{other}: no match" in out


# --- extending, skipping, failures ---------------------------------------------------------------------


def test_extend_index_and_skip_files_already_present(
    catalogue: Path, index_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "grow.idx"
    first = [track(catalogue, s) for s in (1, 2, 3)]
    assert cli.main(["index", str(path), *first, "--jobs", "1"]) == 0
    assert load(path).track_ids == tuple(first)
    capsys.readouterr()

    assert cli.main(["index", str(path), track(catalogue, 4), "--jobs", "1"]) == 0
    assert_same_index(load(path), load(index_path))  # extending equals indexing all at once

    capsys.readouterr()
    assert cli.main(["index", str(path), track(catalogue, 2), "--jobs", "1"]) == 0
    err = capsys.readouterr().err
    assert f"{track(catalogue, 2)}: already in the index, skipped" in err
    assert_same_index(load(path), load(index_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grow.idx"]  # no temp directories left behind


def test_the_same_file_twice_in_one_run_is_indexed_once(catalogue: Path, tmp_path: Path) -> None:
    path = tmp_path / "dup.idx"
    assert cli.main(["index", str(path), track(catalogue, 1), track(catalogue, 1), "--jobs", "1", "-q"]) == 0
    assert load(path).track_ids == (track(catalogue, 1),)


def test_corrupt_file_among_good_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    write_wav(folder / "a_good.wav", music(6.0, seed=11))
    bad = folder / "b_bad.wav"
    bad.write_bytes(b"RIFF" + np.random.default_rng(1).bytes(3000))
    write_wav(folder / "c_good.wav", music(6.0, seed=12))
    path = tmp_path / "mixed.idx"

    assert cli.main(["index", str(path), str(folder), "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "error" in err
    assert load(path).track_ids == (str(folder / "a_good.wav"), str(folder / "c_good.wav"))


def test_too_short_file_is_reported_not_indexed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = write_wav(tmp_path / "blip.wav", np.zeros(100, np.float32))
    good = write_wav(tmp_path / "song.wav", music(6.0, seed=13))
    path = tmp_path / "short.idx"
    assert cli.main(["index", str(path), str(short), str(good), "--jobs", "1"]) == 1
    assert "too short" in capsys.readouterr().err
    assert load(path).track_ids == (str(good),)


def test_index_with_no_audio_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    path = tmp_path / "none.idx"
    assert cli.main(["index", str(path), str(tmp_path / "docs")]) == 1
    assert "no audio files" in capsys.readouterr().err
    assert not path.exists()


def test_index_into_a_non_index_directory_is_refused(
    catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "music"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert cli.main(["index", str(target), track(catalogue, 1), "--jobs", "1", "-q"]) == 1
    assert "not a castwatch index" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_match_on_a_missing_index(tmp_path: Path, queries: dict, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no.idx"
    assert cli.main(["match", str(missing), str(queries["t1"][0]), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err and "not a castwatch index" in captured.err


def test_corrupt_query_gives_an_error_line(
    index_path: Path, queries: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(np.random.default_rng(2).bytes(4000))
    good, expected, offset = queries["t4"]
    assert cli.main(["match", str(index_path), str(bad), str(good), "--json"]) == 1
    captured = capsys.readouterr()
    first, second = json_lines(captured.out)
    assert first["query"] == str(bad)
    assert "matches" not in first
    assert isinstance(first["error"], str) and str(bad) in first["error"]
    assert_found(second, expected, offset)  # the batch went on after the failure
    assert str(bad) in captured.err


# --- jobs ---------------------------------------------------------------------------------------------


def test_parallel_indexing_gives_the_same_index(catalogue: Path, index_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "par.idx"
    assert cli.main(["index", str(path), str(catalogue), "--jobs", "2", "--quiet"]) == 0
    assert_same_index(load(path), load(index_path))


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_bad_jobs_is_a_usage_error(jobs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["index", str(tmp_path / "x.idx"), str(tmp_path), f"--jobs={jobs}"])
    assert info.value.code == 2
    assert "--jobs" in capsys.readouterr().err
    assert not (tmp_path / "x.idx").exists()


# --- as a subprocess ---------------------------------------------------------------------------------


def test_entry_point_match_and_exit_codes(index_path: Path, queries: dict, tmp_path: Path) -> None:
    query, expected, offset = queries["t3"]
    done = run_module("match", str(index_path), str(query), str(queries["other"][0]), "--json")
    assert done.returncode == 0, done.stderr
    found, nothing = json_lines(done.stdout)
    assert_found(found, expected, offset)
    assert nothing["matches"] == []

    missing = run_module("match", str(tmp_path / "nowhere.idx"), str(query), "--json")
    assert missing.returncode == 1
    assert "not a castwatch index" in missing.stderr and "Traceback" not in missing.stderr

    usage = run_module("index", str(tmp_path / "x.idx"), str(query), "--jobs", "0")
    assert usage.returncode == 2
    assert "--jobs" in usage.stderr


def test_entry_point_flushes_each_line_to_a_pipe(index_path: Path, queries: dict, tmp_path: Path) -> None:
    """The third query is a FIFO: the process blocks opening it until this test opens the writing end.

    Lines for the first two queries must reach the pipe while the process is
    still blocked, which only happens if each was flushed as soon as it was done.
    """
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    first, second = str(queries["t1"][0]), str(queries["other"][0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "fingerprint", "match", str(index_path), first, second, str(fifo), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=child_env(),
    )
    try:
        lines = read_lines(proc, 2, timeout=60)
        assert proc.poll() is None, "the process should still be waiting on the FIFO"
        assert [json.loads(line)["query"] for line in lines] == [first, second]
        release_fifo_readers(proc, fifo, timeout=60)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (last,) = json_lines(rest.decode())
    assert last["query"] == str(fifo) and "error" in last  # an empty stream is not audio
    assert proc.returncode == 1


def read_lines(proc: subprocess.Popen[bytes], n: int, timeout: float) -> list[bytes]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while buffer.count(b"\n") < n:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"fewer than {n} lines arrived within {timeout} s: {buffer!r}"
            if sel.select(remaining):
                chunk = os.read(fd, 65536)
                assert chunk, f"stdout closed after {buffer!r}"
                buffer += chunk
    return buffer.splitlines()[:n]


def release_fifo_readers(proc: subprocess.Popen[bytes], fifo: Path, timeout: float) -> None:
    """Open and close the FIFO's writing end whenever a reader waits (soundfile, then ffmpeg) until the process ends."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        time.sleep(0.05)

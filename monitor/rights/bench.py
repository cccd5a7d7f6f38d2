"""``python -m monitor.rights.bench``: the rights database at catalogue scale.

Synthesises a catalogue (default 1,000 recordings, about 50 h; cached as
16 kHz FLAC so that ingestion decodes and resamples like real files), starts
a scratch PostgreSQL (fsync on, as in production) and measures:

- ingest speed end to end (hash, decode, resample, extract, COPY, commit),
  in times real time per extraction process;
- PostgreSQL bytes per hour of audio: the catalogue's tables with their
  indexes and TOAST, and the whole database;
- snapshot load rate (postings per second, median of several loads);
- ``identify`` latency for 10 s files: in-process per file (decode, extract,
  match, metadata), and the whole command from a cold process with a warm
  index cache.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import psycopg
import soundfile as sf
from tqdm import tqdm

from fingerprint.synth import music
from monitor.rights import catalog, identify, migrations
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.localdb import find_bindir, scratch_server
from monitor.rights.snapshot import load_snapshot

FILE_RATE = 16000
CATALOGUE_TABLES = ("tracks", "fingerprints", "ownership", "holders", "catalogue_state")


def _seconds_of(seed: int) -> float:
    """Track lengths between 2 and 4 minutes (mean 3), fixed by the seed."""
    return float(np.random.default_rng(seed).uniform(120.0, 240.0))


def _write_track(args: tuple[Path, int]) -> float:
    folder, seed = args
    path = folder / f"synth-{seed:05d}.flac"
    seconds = _seconds_of(seed)
    if not path.exists():
        tmp = path.with_suffix(".tmp.flac")
        sf.write(tmp, music(seconds, seed, sr=FILE_RATE), FILE_RATE, subtype="PCM_16")
        tmp.rename(path)
    return seconds


def synthesise(folder: Path, n: int, jobs: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(folder, seed) for seed in range(1, n + 1)]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool, tqdm(
        total=n, unit="track", desc="synthesising", file=sys.stderr
    ) as bar:
        for _ in pool.imap_unordered(_write_track, todo, chunksize=4):
            bar.update(1)
    return [folder / f"synth-{seed:05d}.flac" for seed in range(1, n + 1)]


def _queries(files: list[Path], folder: Path, n: int) -> list[tuple[Path, int, float]]:
    """10 s excerpts (light noise) of random catalogue files: (path, catalogue index, start s)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    out = []
    for q in range(n):
        which = int(rng.integers(len(files)))
        samples, rate = sf.read(files[which], dtype="float32")
        start = float(rng.uniform(0, samples.shape[0] / rate - 11))
        part = samples[int(start * rate) : int(start * rate) + 10 * rate]
        part = part + rng.normal(0, 0.1 * float(np.std(part)), part.shape).astype(np.float32)
        path = folder / f"query-{q:03d}.wav"
        sf.write(path, part, rate)
        out.append((path, which, start))
    return out


def _bytes(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT sum(pg_total_relation_size(c.oid)), pg_database_size(current_database())"
        " FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind = 'r'",
        (list(CATALOGUE_TABLES),),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0]), int(row[1])


def run(args: argparse.Namespace) -> str:
    cache = Path(args.cache) / f"synth-catalogue-{FILE_RATE}"
    files = synthesise(cache, args.tracks, args.jobs)
    audio_hours = sum(_seconds_of(seed) for seed in range(1, args.tracks + 1)) / 3600
    server = scratch_server(durable=True, prefix="castwatch-bench-pg-")
    lines: list[str] = []
    try:
        url = server.start()
        with psycopg.connect(url) as conn:
            migrations.migrate(conn)
            print(f"ingesting {len(files)} files ({audio_hours:.1f} h) with {args.jobs} processes", file=sys.stderr)
            with tqdm(total=len(files), unit="file", desc="ingesting", file=sys.stderr) as bar:
                report = catalog.add(
                    conn, files, {}, TrackMeta(owners=(Owner("Bench Records"),)), jobs=args.jobs,
                    on_file=lambda path, outcome, seconds: bar.update(1),
                )  # fmt: skip
            if report.failed or len(report.added) != len(files):
                raise SystemExit(f"ingest failed for {len(report.failed)} files: {report.failed[:3]}")
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
            conn.autocommit = False
            table_bytes, db_bytes = _bytes(conn)
            loads = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                snapshot = load_snapshot(conn)
                loads.append(time.perf_counter() - started)
            postings = snapshot.index.n_postings
            queries = _queries(files, Path(args.cache) / "synth-queries", args.queries)
            ids = {str(path): track_id for path, track_id in report.added}
            workdir = server.datadir.parent / "cache"
            index = identify.cached_index(conn, workdir)
            identifier = identify.Identifier(conn, index)
            identifier.identify(str(queries[0][0]))  # compile and warm up
            latencies, correct = [], 0
            for path, which, start in queries:
                started = time.perf_counter()
                found = identifier.identify(str(path))
                latencies.append(time.perf_counter() - started)
                if found and found[0].track_id == ids[str(files[which])]:
                    correct += abs(found[0].match.ref_start - (start + found[0].match.query_start)) < 1.5
        env = dict(os.environ, CASTWATCH_DATABASE_URL=url, CASTWATCH_CACHE_DIR=str(workdir))
        commands = []
        for path, _, _ in queries[: args.repeats]:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "monitor", "identify", str(path)], env=env, check=True, capture_output=True
            )
            commands.append(time.perf_counter() - started)
    finally:
        server.stop()
        shutil.rmtree(server.datadir.parent, ignore_errors=True)

    per_core = report.audio_seconds / report.elapsed_s / args.jobs
    load_s = statistics.median(loads)
    lat = np.array(latencies) * 1e3
    lines += [
        f"## {date.today().isoformat()}",
        "",
        f"Machine: {_machine()}",
        "",
        f"Command: `python -m monitor.rights.bench --tracks {args.tracks} --jobs {args.jobs}`",
        "",
        f"Catalogue: {len(files)} synthesised recordings, {audio_hours:.1f} h, 16 kHz mono FLAC;"
        f" {postings:,} postings.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| ingest end to end ({args.jobs} processes, {report.elapsed_s:.0f} s) | {per_core:,.0f} x real time per process |",
        f"| PostgreSQL, catalogue tables with indexes and TOAST | {table_bytes / audio_hours / 1e6:.2f} MB per hour |",
        f"| PostgreSQL, whole database | {db_bytes / audio_hours / 1e6:.2f} MB per hour ({db_bytes / 1e6:.0f} MB) |",
        f"| snapshot load (median of {args.repeats}: {load_s:.2f} s) | {postings / load_s / 1e6:.1f} M postings/s |",
        f"| identify, 10 s file in process p50 / p95 | {np.median(lat):.1f} / {np.percentile(lat, 95):.1f} ms |",
        f"| identify command, cold process, warm index cache (median of {len(commands)}) | {statistics.median(commands):.2f} s |",
        f"| identify recall on the {len(queries)} queries (right recording and time) | {correct / len(queries):.1%} |",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()[1]
        memory = f"{int(mem) / 2**20:.0f} GiB"
    except OSError:
        memory = "?"
    postgres = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True, check=False)
    return f"{cpu}, {os.cpu_count()} cores, {memory}; Python {platform.python_version()}; {postgres.stdout.strip()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.rights.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1000, help="synthesised recordings (default 1000, ~50 h)")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1), help="extraction processes")
    parser.add_argument("--queries", type=int, default=50, help="10 s identify queries (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="snapshot loads and cold identify commands (default 5)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "castwatch"), help="where synthesised audio is kept")
    parser.add_argument("--record", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    table = run(args)
    print(table)
    if args.record:
        with open(args.record, "a", encoding="utf-8") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

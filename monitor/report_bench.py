"""``python -m monitor.report_bench``: rights-holder reports over a large period, time and peak memory.

Starts a scratch PostgreSQL, generates ``--plays`` plays (default
1,000,000) of one holder's recordings with ``generate_series`` (200
recordings, 50 streams, one play every 30 s of stream time per stream, 10 %
unlicensed with an infringement each), then runs ``castwatch report`` over
the whole period in each format as a child process and reports its wall
time, peak resident memory and output size. Memory that does not grow with
the number of plays is the evidence that reports stream.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from monitor.reports import FORMATS
from monitor.rights import migrations
from monitor.rights.localdb import scratch_server

HOLDER = "Bench Records"
PERIOD = ("2026-01-01", "2027-01-01")
TRACKS = 200
STREAMS = 50

_GENERATE = """
INSERT INTO holders (id, name) VALUES (1, %(holder)s);
INSERT INTO tracks (id, isrc, title, artist, duration_s, content_sha256, source)
    SELECT i, 'XXBEN' || lpad(i::text, 7, '0'), format('Bench recording %%s', i), 'Bench Artist', 200,
           sha256(i::text::bytea), format('bench/%%s.flac', i)
    FROM generate_series(1, %(tracks)s) i;
INSERT INTO ownership (track_id, holder_id, share) SELECT i, 1, 100 FROM generate_series(1, %(tracks)s) i;
INSERT INTO streams (id, name, licensee, territory, timezone)
    SELECT format('bench-%%s', i), format('Bench stream %%s', i), 'Bench Radio', 'GB', 'Europe/London'
    FROM generate_series(0, %(streams)s - 1) i;
INSERT INTO detections (event_id, stream_id, track_id, started_at, ended_at, ref_start_s, ref_end_s,
                        score, speed, licensed, state)
    SELECT md5(i::text)::uuid, format('bench-%%s', i %% %(streams)s), 1 + i %% %(tracks)s,
           timestamptz '2026-01-01 00:00:00+00' + (i / %(streams)s) * interval '30 s',
           timestamptz '2026-01-01 00:00:00+00' + (i / %(streams)s) * interval '30 s' + interval '25 s',
           0, 25.5, 0.4, 1.02, i %% 10 <> 0, 'ended'
    FROM generate_series(0, %(plays)s - 1) i;
INSERT INTO infringements (detection_id, created_at, updated_at)
    SELECT event_id, started_at, started_at FROM detections WHERE NOT licensed;
"""


def generate(conn: psycopg.Connection, plays: int) -> None:
    """``plays`` plays of ``HOLDER``'s recordings in 2026 (at most 50 x 2880 a day), then ANALYZE."""
    params = {"holder": HOLDER, "tracks": TRACKS, "streams": STREAMS, "plays": plays}
    with conn.transaction():
        for statement in _GENERATE.split(";")[:-1]:
            conn.execute(statement, params)  # type: ignore[arg-type]
    conn.execute("ANALYZE")


@dataclass(frozen=True)
class Run:
    fmt: str
    seconds: float
    peak_rss_mb: float
    out_bytes: int


# The child prints its own peak resident memory (VmHWM, which exec resets) as its last line: getrusage's
# ru_maxrss would also count the parent's memory that the child had between fork and exec.
_CHILD = """import sys
from monitor.cli import main
code = main(sys.argv[1:])
print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))
sys.exit(code)
"""


def measure(url: str, fmt: str, out: Path) -> Run:
    """One ``castwatch report`` child process over the whole period: wall time, peak RSS, output size (Linux)."""
    env = {**os.environ, "CASTWATCH_DATABASE_URL": url}
    argv = [sys.executable, "-c", _CHILD, "report", "--holder", HOLDER, "--from", PERIOD[0], "--to", PERIOD[1],
            "--format", fmt, "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"castwatch report --format {fmt} failed ({child.returncode}): {child.stderr}")
    return Run(fmt, seconds, int(child.stdout.split()[-1]) / 1024, out.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.report_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plays", type=int, default=1_000_000, help="plays to generate (default 1,000,000)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    args = parser.parse_args(argv)
    server = scratch_server(durable=False, prefix="castwatch-report-bench-")
    try:
        server.start()
        url = server.create_database("report_bench")
        with psycopg.connect(url) as conn:
            migrations.migrate(conn)
            started = time.perf_counter()
            generate(conn, args.plays)
        print(f"generated {args.plays:,} plays in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        print("| format | plays | time (s) | peak RSS (MB) | output (MB) |\n|---|---:|---:|---:|---:|")
        for fmt in args.formats:
            run = measure(url, fmt, server.datadir.parent / f"report.{fmt}")
            print(f"| {fmt} | {args.plays:,} | {run.seconds:.1f} | {run.peak_rss_mb:.0f} | {run.out_bytes / 1e6:.1f} |", flush=True)
    finally:
        server.stop()
        shutil.rmtree(server.datadir.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

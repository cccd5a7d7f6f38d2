"""``python -m monitor.bench``: one worker process under live load, with the real broker and database.

What it measures, on a catalogue of about 100 h (``--tracks``):

- how many concurrent real-time streams one ``castwatch worker`` process
  sustains without growing lag: streams are added in steps (``--levels``),
  each step runs ``--minutes`` of stream time, and a step is sustained when
  the backlog (chunks sent minus chunks processed) stays within one chunk
  per stream and does not trend up;
- the worker's CPU (cores busy), so that streams per core can be stated;
- chunk processing time p50/p99 from the worker's own histogram
  (``castwatch_chunk_processing_seconds``, interpolated within buckets as
  Prometheus' ``histogram_quantile`` does);
- detection latency p50/p95: stream time from a ground-truth play's start
  to the ``detected_at`` of its ``play.started`` event, and the plays found
  and missed, plays reported that were not played, and further
  ``play.started`` inside a play already found (a play reported in pieces);
- start accuracy: how far each found play's reported start is from its true
  start (p50 / p95 of the error, and how many within 2 s), taken from the
  play's last event (``play.ended`` reports a start revised after
  ``play.started``);
- memory: the worker's resident memory at each step, and per stream (the
  slope over the steps).

The catalogue is synthesised music (``fingerprint.synth``, cached as 16 kHz
FLAC) and, to reach 100 h without hours of synthesis, the same recordings
time-reversed (distinct audio with the same spectral statistics, so the same
index load). It is ingested once into a benchmark PostgreSQL cluster kept
next to the local one (``bench-postgres``), and reused. The broker is a
scratch one. Streams are simulated broadcasts (``monitor.simulate.compose``:
crossfades, talk-over, jingles, songs not in the catalogue, radio speed-up)
published at real-time pace with staggered chunk phases; ``--broadcasts``
distinct compositions are shared round-robin by the streams (each stream is
processed independently, so sharing audio saves composing time, not work).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import psycopg
import soundfile as sf
from aiokafka import AIOKafkaConsumer
from tqdm import tqdm

from monitor.ingest import ChunkPublisher, PlannedChunk, chunk_samples
from monitor.kafka.local import scratch_broker
from monitor.kafka.topics import CHUNKS, DETECTIONS, ensure_topics
from monitor.rights import catalog, migrations
from monitor.rights.bench import _machine, synthesise
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.localdb import LocalServer, find_bindir, free_port
from monitor.settings import Settings
from monitor.simulate import TruthPlay, compose

FILE_RATE = 16000
SAMPLE_EVERY_S = 5.0
START_TOLERANCE_S = 2.0  # a play's reported start this close to its true start is right (the end-to-end tests' bound)


def reverse(sources: list[Path], folder: Path) -> list[Path]:
    """Time-reversed copies of ``sources`` (cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for source in tqdm(sources, unit="track", desc="reversing", file=sys.stderr):
        path = folder / f"rev-{source.stem.split('-')[-1]}.flac"
        if not path.exists():
            samples, rate = sf.read(source, dtype="int16")
            tmp = path.with_suffix(".tmp.flac")
            sf.write(tmp, np.ascontiguousarray(samples[::-1]), rate, subtype="PCM_16")
            tmp.rename(path)
        out.append(path)
    return out


def catalogue_files(cache: Path, tracks: int, jobs: int) -> list[Path]:
    """``tracks`` recordings: half synthesised, half those reversed."""
    synthesised = synthesise(cache / f"synth-catalogue-{FILE_RATE}", (tracks + 1) // 2, jobs)
    return synthesised + reverse(synthesised[: tracks // 2], cache / f"reversed-catalogue-{FILE_RATE}")


def bench_database(settings: Settings, files: list[Path], jobs: int) -> tuple[LocalServer, str, dict[str, int], float]:
    """The benchmark cluster, started, holding ``files``: (server, url, track id by source path, hours)."""
    server = LocalServer(settings.pgdata.parent / "bench-postgres", free_port(), find_bindir(), durable=True)
    url = server.start()
    with psycopg.connect(url) as conn:
        migrations.migrate(conn)
        # Stream names repeat from run to run: a worker must not resume another run's streams.
        conn.execute("DELETE FROM stream_state")
        conn.commit()
        known = {source for (source,) in conn.execute("SELECT source FROM tracks WHERE removed_at IS NULL")}
        missing = [f for f in files if str(f) not in known]
        if missing:
            with tqdm(total=len(missing), unit="file", desc="ingesting", file=sys.stderr) as bar:
                report = catalog.add(
                    conn, missing, {}, TrackMeta(owners=(Owner("Bench Records"),)), jobs=jobs,
                    on_file=lambda path, outcome, seconds: bar.update(1),
                )  # fmt: skip
            if report.failed:
                raise SystemExit(f"ingest failed for {len(report.failed)} files: {report.failed[:3]}")
            conn.commit()
        wanted = [str(f) for f in files]
        rows = conn.execute(
            "SELECT source, id, duration_s FROM tracks WHERE removed_at IS NULL AND source = ANY(%s)", (wanted,)
        ).fetchall()
        # Only the benchmark's recordings may be live: others would change the index size.
        others = conn.execute("SELECT count(*) FROM tracks WHERE removed_at IS NULL AND NOT source = ANY(%s)", (wanted,)).fetchone()
        if others and others[0]:
            raise SystemExit(f"the benchmark database {server.datadir} holds {others[0]} other recordings; remove it to start afresh")
    return server, url, {source: track_id for source, track_id, _ in rows}, sum(d for _, _, d in rows) / 3600


@dataclass
class Stream:
    name: str
    audio: np.ndarray  # int16 at FILE_RATE
    truth: list[TruthPlay]
    origin_ns: int  # capture time of its first sample
    origin_mono: float  # monotonic time its first sample was captured
    level: int  # streams in the step that added it
    sent: int = 0

    def chunk(self, k: int, size: int) -> PlannedChunk | None:
        part = self.audio[k * size : (k + 1) * size]
        if part.shape[0] < size:
            return None
        return PlannedChunk(k, self.origin_ns + round(k * size * 1e9 / FILE_RATE), part, (k + 1) * size / FILE_RATE)


@dataclass
class Sample:
    wall: float
    sent: int
    processed: int
    cpu_s: float
    rss: int
    buckets: dict[float, float]


@dataclass
class Step:
    streams: int
    samples: list[Sample] = field(default_factory=list)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used, resident bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative ``buckets`` (upper bound -> count)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return bounds[-1]


def chunk_buckets(metrics: dict[str, float]) -> dict[float, float]:
    prefix = 'castwatch_chunk_processing_seconds_bucket{le="'
    return {float(k[len(prefix) : -2]): v for k, v in metrics.items() if k.startswith(prefix)}


def processed(metrics: dict[str, float]) -> int:
    return int(sum(v for k, v in metrics.items() if k.startswith(("castwatch_chunks_total{", "castwatch_duplicate_chunks_total{"))))


class Load:
    """The streams, their chunks sent at real-time pace with staggered phases, and what the worker said."""

    def __init__(self, publisher: ChunkPublisher, chunk_s: float) -> None:
        self.publisher = publisher
        self.size = chunk_samples(FILE_RATE, chunk_s)
        self.chunk_s = chunk_s
        self.streams: list[Stream] = []
        self._due: list[tuple[float, int, int]] = []  # (monotonic due, stream index, chunk index)
        self.wake = asyncio.Event()

    def add(self, count: int, broadcasts: list[tuple[np.ndarray, list[TruthPlay]]], level: int) -> None:
        now_mono, now_ns = time.monotonic(), time.time_ns()
        for j in range(count):
            i = len(self.streams)
            audio, truth = broadcasts[i % len(broadcasts)]
            phase = j / count * self.chunk_s  # spread over one chunk period
            stream = Stream(f"bench-{i + 1}", audio, truth, now_ns + round(phase * 1e9), now_mono + phase, level)
            self.streams.append(stream)
            heapq.heappush(self._due, (stream.origin_mono + self.chunk_s, i, 0))
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._due:
                self.wake.clear()
                await self.wake.wait()
                continue
            due, i, k = self._due[0]
            delay = due - time.monotonic()
            if delay > 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            heapq.heappop(self._due)
            stream = self.streams[i]
            chunk = stream.chunk(k, self.size)
            if chunk is None:
                continue
            await self.publisher.send(stream.name, chunk, FILE_RATE)
            stream.sent += 1
            heapq.heappush(self._due, (stream.origin_mono + (k + 2) * self.chunk_s, i, k + 1))


async def collect_detections(broker: str, out: list[dict[str, object]], stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(DETECTIONS, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            out += [json.loads(m.value) for messages in batches.values() for m in messages]
    finally:
        await consumer.stop()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Detection:
    found: int  # truth plays announced
    missed: int
    false: int  # play.started matching no truth play
    split: int  # further play.started inside a truth play already found (one play reported in pieces)
    latencies: list[float]  # stream seconds, truth start -> detected_at
    reported: list[float]  # stream seconds, the play's reported start -> detected_at (the worker's metric)
    talk_over: list[bool] = field(default_factory=list)  # per found play, as latencies: talked over at its start
    start_errors: list[float] = field(default_factory=list)  # per found play: its final reported start - true start

    def start_accuracy(self) -> str:
        """How far reported starts are from true ones: |error| p50 / p95 (s), and how many within START_TOLERANCE_S."""
        if not self.start_errors:
            return "-"
        errors = np.abs(np.array(self.start_errors))
        within = int((errors <= START_TOLERANCE_S).sum())
        return f"{np.median(errors):.1f} / {np.percentile(errors, 95):.1f} ({within} of {errors.size} within {START_TOLERANCE_S:g} s)"


def score_detections(streams: list[Stream], events: list[dict[str, object]], ids: dict[str, int], until_ns: int) -> dict[int, Detection]:
    """Per step (its stream count): truth plays that started at least 30 s before ``until_ns``, found or not."""
    started: dict[str, list[dict[str, object]]] = {}
    final_start: dict[object, str] = {}  # event_id: the start its play.ended reports
    for event in events:
        if event["event"] == "play.started":
            started.setdefault(str(event["stream_id"]), []).append(event)
        elif "event_id" in event:
            final_start[event["event_id"]] = str(event["started_at"])
    out: dict[int, Detection] = {}
    for stream in streams:
        d = out.setdefault(stream.level, Detection(0, 0, 0, 0, [], []))
        mine = started.get(stream.name, [])
        claimed: set[int] = set()
        for play in stream.truth:
            start = stream.origin_ns / 1e9 + play.stream_start
            end = stream.origin_ns / 1e9 + play.stream_end
            if start > until_ns / 1e9 - 30.0:
                continue
            track = ids[str(play.recording)]
            hits = [
                (n, e) for n, e in enumerate(mine)
                if e["track_id"] == track and start - 5.0 <= _epoch(str(e["started_at"])) <= end and n not in claimed
            ]  # fmt: skip
            if not hits:
                d.missed += 1
                print(
                    f"missed: {stream.name} {Path(str(play.recording)).name} (track {track}) from {play.stream_start:.1f} s"
                    f" to {play.stream_end:.1f} s of the stream, recording from {play.ref_start:.1f} s, speed"
                    f" {play.speed:.3f}{', talk-over' if play.talk_over else ''}; announced on this stream:"
                    f" {sorted({int(str(e['track_id'])) for e in mine})}", file=sys.stderr,
                )  # fmt: skip
                continue
            n, first = min(hits, key=lambda h: _epoch(str(h[1]["detected_at"])))
            claimed.add(n)
            d.found += 1
            d.latencies.append(_epoch(str(first["detected_at"])) - start)
            d.reported.append(_epoch(str(first["detected_at"])) - _epoch(str(first["started_at"])))
            d.talk_over.append(play.talk_over)
            d.start_errors.append(_epoch(final_start.get(first.get("event_id"), str(first["started_at"]))) - start)
        for n, e in enumerate(mine):
            if n in claimed:
                continue
            at = _epoch(str(e["started_at"]))
            inside = [
                p for p in stream.truth
                if ids[str(p.recording)] == e["track_id"]
                and stream.origin_ns / 1e9 + p.stream_start - 5.0 <= at <= stream.origin_ns / 1e9 + p.stream_end
            ]  # fmt: skip
            if not inside:
                d.false += 1
            elif any(stream.origin_ns / 1e9 + p.stream_start <= until_ns / 1e9 - 30.0 for p in inside):
                d.split += 1  # (a play that started too late to be scored is not scored in pieces either)
                play = inside[0]
                print(
                    f"split: {stream.name} {Path(str(play.recording)).name} (track {e['track_id']}), played from"
                    f" {play.stream_start:.1f} s to {play.stream_end:.1f} s of the stream, announced again from"
                    f" {at - stream.origin_ns / 1e9:.1f} s{', talk-over' if play.talk_over else ''}", file=sys.stderr,
                )  # fmt: skip
    return out


def start_worker(url: str, broker: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CASTWATCH_DATABASE_URL=url, CASTWATCH_BROKER_URL=broker)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", "worker", "--web-port", str(port), "--group", "castwatch-bench"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def wait_ready(port: int, worker: subprocess.Popen[bytes], log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); its log: {log}")
        try:
            if scrape(port).get("castwatch_index_recordings", 0) > 0:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not come up within {timeout_s:.0f} s; its log: {log}")
        await asyncio.sleep(1.0)


def sustained(step: Step, chunk_s: float) -> tuple[bool, float, int]:
    """(sustained, backlog slope in chunks/s over the step's second half, backlog at its end)."""
    half = [s for s in step.samples if s.wall >= (step.samples[0].wall + step.samples[-1].wall) / 2]
    backlog = np.array([s.sent - s.processed for s in half], np.float64)
    wall = np.array([s.wall for s in half])
    slope = float(np.polyfit(wall - wall[0], backlog, 1)[0]) if len(half) >= 3 else 0.0
    rate = step.streams / chunk_s
    end = int(backlog[-1])
    return end <= step.streams and slope <= 0.02 * rate, slope, end


async def run(args: argparse.Namespace) -> str:
    settings = Settings.from_env()
    cache = Path(args.cache)
    files = catalogue_files(cache, args.tracks, args.jobs)
    server, url, ids, hours = bench_database(settings, files, args.jobs)
    broker = scratch_broker(settings, prefix="castwatch-bench-kafka-")
    workdir = Path(tempfile.mkdtemp(prefix="castwatch-bench-"))
    levels = [int(n) for n in args.levels.split(",")]
    minutes_total = args.minutes * len(levels) + 1.0
    worker: subprocess.Popen[bytes] | None = None
    try:
        broker_url = await asyncio.to_thread(broker.start)
        await ensure_topics(broker_url, args.partitions)
        port = free_port()
        log = workdir / "worker.log"
        worker = start_worker(url, broker_url, port, log)
        broadcasts = []
        for seed in tqdm(range(min(args.broadcasts, max(levels))), unit="broadcast", desc="composing", file=sys.stderr):
            composition = await asyncio.to_thread(compose, files, minutes_total, 1000 + seed, FILE_RATE)
            pcm = np.clip(np.round(composition.samples * 32767.0), -32768, 32767).astype(np.int16)
            broadcasts.append((pcm, composition.truth))
        await wait_ready(port, worker, log)
        stop = asyncio.Event()
        events: list[dict[str, object]] = []
        steps: list[Step] = []
        async with ChunkPublisher(broker_url, CHUNKS) as publisher:
            load = Load(publisher, args.chunk_seconds)
            tasks = [asyncio.create_task(load.run(stop)), asyncio.create_task(collect_detections(broker_url, events, stop))]
            try:
                for level in levels:
                    load.add(level - len(load.streams), broadcasts, level)
                    step = Step(level)
                    steps.append(step)
                    end = time.monotonic() + args.minutes * 60
                    while time.monotonic() < end:
                        await asyncio.sleep(SAMPLE_EVERY_S)
                        metrics = await asyncio.to_thread(scrape, port)
                        cpu, rss = process_usage(worker.pid)
                        step.samples.append(
                            Sample(time.monotonic(), publisher.sent, processed(metrics), cpu, rss, chunk_buckets(metrics))
                        )
                        if worker.poll() is not None:
                            raise SystemExit(f"the worker exited ({worker.returncode}); its log: {log}")
                    ok, slope, backlog = sustained(step, args.chunk_seconds)
                    print(
                        f"{level} streams: {'sustained' if ok else 'NOT sustained'} (backlog {backlog} chunks,"
                        f" {slope:+.2f} chunks/s)", file=sys.stderr,
                    )  # fmt: skip
                    if not ok:
                        break
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
        until_ns = time.time_ns()
        detections = score_detections(load.streams, events, ids, until_ns)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
        server.stop()
    return report(args, steps, detections, hours, len(ids))


def report(args: argparse.Namespace, steps: list[Step], detections: dict[int, Detection], hours: float, tracks: int) -> str:
    lines = [
        f"## {date.today().isoformat()}",
        "",
        f"Machine: {_machine()}",
        "",
        f"Command: `python -m monitor.bench --tracks {args.tracks} --levels {args.levels} --minutes {args.minutes:g}"
        f" --chunk-seconds {args.chunk_seconds:g}`",
        "",
        f"Catalogue: {tracks} recordings, {hours:.1f} h. Chunks of {args.chunk_seconds:g} s at {FILE_RATE} Hz;"
        f" {args.minutes:g} min of real time per step; figures over each step's second half.",
        "",
        "| streams | sustained | backlog at end (chunks) | worker CPU (cores) | streams per core"
        " | chunk p50 / p99 (ms) | RSS (MB) | plays found / missed / false / split"
        " | latency from true start p50 / p95 (s) | from reported start p50 / p95 (s) | start error p50 / p95 (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rss = []
    for step in steps:
        ok, _, backlog = sustained(step, args.chunk_seconds)
        half = [s for s in step.samples if s.wall >= (step.samples[0].wall + step.samples[-1].wall) / 2]
        first, last = half[0], half[-1]
        cores = (last.cpu_s - first.cpu_s) / max(last.wall - first.wall, 1e-9)
        window = {b: last.buckets[b] - first.buckets.get(b, 0.0) for b in last.buckets}
        p50, p99 = (histogram_quantile(q, window) * 1e3 for q in (0.5, 0.99))
        d = detections.get(step.streams, Detection(0, 0, 0, 0, [], []))
        lat = np.array(d.latencies) if d.latencies else np.array([np.nan])
        rep = np.array(d.reported) if d.reported else np.array([np.nan])
        rss.append((step.streams, last.rss))
        lines.append(
            f"| {step.streams} | {'yes' if ok else 'no'} | {backlog} | {cores:.2f} | {step.streams / max(cores, 1e-9):.0f}"
            f" | {p50:.1f} / {p99:.1f} | {last.rss / 1e6:.0f} | {d.found} / {d.missed} / {d.false} / {d.split}"
            f" | {np.median(lat):.1f} / {np.percentile(lat, 95):.1f} | {np.median(rep):.1f} / {np.percentile(rep, 95):.1f}"
            f" | {d.start_accuracy()} |"
        )
    if len(rss) >= 2:
        streams, resident = np.array(rss, np.float64).T
        per_stream = float(np.polyfit(streams, resident, 1)[0])
        lines += ["", f"Memory per stream (slope of RSS over the steps): {per_stream / 1e6:.2f} MB."]
    all_lat = np.array([x for d in detections.values() for x in d.latencies])
    all_rep = np.array([x for d in detections.values() for x in d.reported])
    if all_lat.size:
        lines += [
            f"Detection latency over all steps ({all_lat.size} plays), stream time to `play.started`: from the true"
            f" start (fade-in included) p50 {np.median(all_lat):.1f} s, p95 {np.percentile(all_lat, 95):.1f} s;"
            f" from the play's reported start p50 {np.median(all_rep):.1f} s, p95 {np.percentile(all_rep, 95):.1f} s."
        ]
    return "\n".join(lines + [""])


def catalogue_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark on this catalogue takes: its size, the work processes, the cache, the record file."""
    parser.add_argument("--tracks", type=int, default=2000, help="catalogue recordings (default 2000, ~100 h)")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1), help="processes for synthesis and ingest")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "castwatch"), help="where synthesised audio is kept")
    parser.add_argument("--record", help="append the table to this markdown file")


def publish(text: str, record: str | None) -> None:
    """Print a result table, and append it to the ``--record`` file if one was given."""
    print(text)
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write("\n" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.bench", description=__doc__.splitlines()[0])
    catalogue_arguments(parser)
    parser.add_argument("--levels", default="100,200,300,400", help="stream counts to step through (default 100,200,300,400)")
    parser.add_argument("--minutes", type=float, default=3.0, help="real-time minutes per step (default 3)")
    parser.add_argument("--chunk-seconds", type=float, default=5.0, help="audio per chunk (default 5)")
    parser.add_argument("--broadcasts", type=int, default=12, help="distinct simulated broadcasts shared by the streams")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the chunk topic (default 4)")
    args = parser.parse_args(argv)
    publish(asyncio.run(run(args)), args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``castwatch demo``: the main job end to end on local defaults, in about a minute.

1. Starts the local PostgreSQL (``castwatch db up``'s server, database
   ``castwatch_demo`` so that it never mixes with your own catalogue), adds a
   small synthesised catalogue with its rights-holders, registers a stream and
   its licence, then plays a degraded excerpt of one recording the way a radio
   would (3 % fast, a presenter-level noise bed, a phone-line band limit) and
   identifies it: recording, holders, times, and whether the stream was licensed.
2. Starts the local Kafka broker and a worker, composes a few minutes of
   broadcast from the catalogue (crossfades, talk-over, jingles, songs not in
   the catalogue, radio speed-up), publishes it, and prints detections and
   infringements as the worker emits them, then the ground truth beside them.

Re-running it reuses what is already there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np
import psycopg
import soundfile as sf

from fingerprint.bench import degrade
from fingerprint.params import SAMPLE_RATE
from fingerprint.synth import music
from monitor.rights import catalog, identify, licences, migrations
from monitor.rights.catalog import Owner, TrackMeta
from monitor.events import iso_utc
from monitor.ingest import ChunkPublisher, chunk_samples, plan_chunks
from monitor.kafka.local import broker_url
from monitor.kafka.topics import CHUNKS, DETECTIONS, ensure_topics
from monitor.rights.commands import describe_matches
from monitor.rights.db import local_server
from monitor.rights.localdb import free_port
from monitor.settings import Settings
from monitor.simulate import compose

DATABASE = "castwatch_demo"
TRACK_SECONDS = 60.0
NORTHWIND = "Northwind Records"
BLUEBIRD = "Bluebird Publishing"
CATALOGUE = [  # seed, title, artist, owners
    (1, "Harbour Lights", "The Lanterns", (Owner(NORTHWIND),)),
    (2, "Copper Sky", "Mira Vale", (Owner(NORTHWIND),)),
    (3, "Night Ferry", "The Lanterns", (Owner(NORTHWIND),)),
    (4, "Paper Moons", "Oskar & June", (Owner(NORTHWIND, 50), Owner(BLUEBIRD, 50))),
    (5, "Salt Road", "Mira Vale", (Owner(BLUEBIRD),)),
    (6, "Glasshouse", "Oskar & June", (Owner(NORTHWIND),)),
]
STREAM = licences.Stream("demo-fm", "Demo FM", "Demo FM Ltd", "GB", "Europe/London")


def _database(settings: Settings, out: TextIO) -> str:
    server = local_server(settings)
    if settings.database_url:
        print("  (CASTWATCH_DATABASE_URL is set; the demo still uses its own local database)", file=out)
    server.start()
    url = server.create_database(DATABASE)
    with psycopg.connect(url) as conn:
        migrations.migrate(conn)
    print(f"  local PostgreSQL: {url}", file=out)
    return url


def _catalogue(conn: psycopg.Connection, root: Path, out: TextIO) -> dict[int, Path]:
    files: dict[int, Path] = {}
    metas: dict[Path, TrackMeta] = {}
    for seed, title, artist, owners in CATALOGUE:
        path = root / f"{title.lower().replace(' ', '-')}.wav"
        sf.write(path, music(TRACK_SECONDS, seed), SAMPLE_RATE)
        files[seed] = path
        metas[path.resolve()] = TrackMeta(title, artist, None, owners)
    report = catalog.add(conn, list(files.values()), metas, TrackMeta())
    print(
        f"  catalogue: {len(report.added)} recordings added, {len(report.already)} already there"
        f" ({len(CATALOGUE)} x {TRACK_SECONDS:.0f} s, synthesised); holders {NORTHWIND}, {BLUEBIRD}",
        file=out,
    )
    if not licences.list_licences(conn, STREAM.licensee):
        licences.add_stream(conn, STREAM, replace=True)
        licences.add_licence(
            conn,
            licences.LicenceSpec(STREAM.licensee, "blanket", ("GB",), datetime(2026, 1, 1, tzinfo=timezone.utc),
                                 holder=NORTHWIND, note="demo blanket licence"),
        )  # fmt: skip
    print(f"  stream {STREAM.id} ({STREAM.licensee}, {STREAM.territory}): blanket licence from {NORTHWIND} only", file=out)
    return files


def run(
    workdir: Path | None = None, settings: Settings | None = None, out: TextIO = sys.stdout, live: bool = True
) -> int:
    """Set up, identify an excerpt, then (``live``) monitor a simulated broadcast. 0 when both found what they should."""
    settings = settings or Settings.from_env()
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="castwatch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"castwatch demo: working in {root}", file=out)
    url = _database(settings, out)
    with psycopg.connect(url) as conn:
        files = _catalogue(conn, root, out)
        seed, title = 4, "Paper Moons"
        samples, _ = sf.read(files[seed], dtype="float32")
        start_s = 21.0
        excerpt = samples[int(start_s * SAMPLE_RATE) : int((start_s + 12.5) * SAMPLE_RATE)]
        rng = np.random.default_rng(7)
        broadcast = degrade.speed(excerpt, 1.03)[: 12 * SAMPLE_RATE]
        broadcast = degrade.mix_at_snr(broadcast, degrade.pink_noise(broadcast.shape[0], rng), 5.0)
        broadcast = degrade.telephone(broadcast, SAMPLE_RATE)
        query = root / "broadcast-excerpt.wav"
        sf.write(query, broadcast / max(1e-9, float(np.abs(broadcast).max())) * 0.9, SAMPLE_RATE)
        print(
            f"  broadcast: {query.name}, 12 s of {title!r} from {start_s:.0f} s, played 3 % fast,"
            " under pink noise at 5 dB SNR, through a telephone band",
            file=out,
        )
        at = datetime(2026, 6, 1, 20, 0, tzinfo=timezone.utc)
        index = identify.cached_index(conn, settings.cache_dir)
        found = identify.Identifier(conn, index, stream=STREAM.id, at=at).identify(str(query))
    print(f"\n$ castwatch identify {query.name} --stream {STREAM.id} --at {at.isoformat()}", file=out)
    print(describe_matches(str(query), found), file=out)
    print(
        f"\n(truth: {title!r} from {start_s:.1f} s at x1.030; licensed only for the {NORTHWIND} half)\n"
        f"try it yourself:\n  CASTWATCH_DATABASE_URL={url} .venv/bin/castwatch identify {query} --stream {STREAM.id}",
        file=out,
    )
    identified = bool(found) and found[0].title == title and found[0].licensed is False
    if not live:
        return 0 if identified else 1
    return 0 if identified and _monitor(url, settings, list(files.values()), root, out) else 1


BROADCAST_MINUTES = 3.0
OFF_AIR_S = 30.0  # quiet at the end, so that the last play ends too


def _monitor(db_url: str, settings: Settings, catalogue: list[Path], root: Path, out: TextIO) -> bool:
    """Worker + simulated broadcast; print events as they come. True when every true play was found once."""
    print("\n--- live monitoring ---", file=out)
    broker = broker_url(settings)
    asyncio.run(ensure_topics(broker))
    port = free_port()
    env = dict(os.environ, CASTWATCH_DATABASE_URL=db_url, CASTWATCH_BROKER_URL=broker)
    log = open(root / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "monitor", "worker", "--web-port", str(port), "--group", "castwatch-demo"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    print(f"  Kafka {broker}; worker pid {worker.pid}, metrics on http://127.0.0.1:{port}/metrics, log {log.name}", file=out)
    try:
        composition = compose(catalogue, BROADCAST_MINUTES, seed=7)
        quiet = np.random.default_rng(0).normal(0, 1e-3, int(OFF_AIR_S * composition.rate)).astype(np.float32)
        samples = np.concatenate((composition.samples, quiet))
        print(f"  broadcast: {BROADCAST_MINUTES:g} min on {STREAM.id} with {len(composition.truth)} catalogue plays,"
              " jingles, talk-over and songs not in the catalogue; events as the worker emits them:", file=out)  # fmt: skip
        events = asyncio.run(_publish_and_follow(broker, samples, composition.rate, len(composition.truth), out))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    titles = {path.stem: title for (_, title, _, _), path in zip(CATALOGUE, catalogue)}
    print("  ground truth:", file=out)
    for play in composition.truth:
        print(f"    {titles.get(Path(play.recording).stem, play.recording):14s} {play.stream_start:6.1f}-{play.stream_end:6.1f} s"
              f"  recording {play.ref_start:5.1f}-{play.ref_end:5.1f} s  x{play.speed:.3f}", file=out)  # fmt: skip
    ended = [e for e in events if e["event"] == "play.ended"]
    print(f"  {len(ended)} plays detected for {len(composition.truth)} in the truth;"
          f" query them in PostgreSQL (table detections) or keep a worker running: `castwatch worker`", file=out)  # fmt: skip
    return len(ended) == len(composition.truth)


async def _publish_and_follow(broker: str, samples: np.ndarray, rate: int, plays: int, out: TextIO) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(DETECTIONS, bootstrap_servers=broker, auto_offset_reset="latest", group_id=None)
    await consumer.start()
    try:
        await consumer.seek_to_end()
        start_ns = time.time_ns()
        async with ChunkPublisher(broker, CHUNKS) as publisher:  # as fast as the broker takes it
            for chunk in plan_chunks(samples, rate, chunk_samples(rate, 2.0), start_ns):
                await publisher.send(STREAM.id, chunk, rate)
        events: list[dict] = []
        deadline = time.monotonic() + 120
        while sum(e["event"] == "play.ended" for e in events) < plays and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for m in messages:
                    event = json.loads(m.value)
                    if m.key != STREAM.id.encode() or event["started_at"] < iso_utc(start_ns / 1e9):
                        continue
                    events.append(event)
                    _print_event(event, start_ns, out)
        return events
    finally:
        await consumer.stop()


def _print_event(event: dict, start_ns: int, out: TextIO) -> None:
    def at(iso: str) -> float:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - start_ns / 1e9

    span = f"{at(event['started_at']):6.1f} s" + (f"-{at(event['ended_at']):6.1f} s" if event["ended_at"] else "")
    verdict = "licensed" if event["licensed"] else f"INFRINGEMENT: {event['licence_reason']}"
    print(f"    {event['event']:12s} {event['title']:14s} at {span}  recording from {event['ref_start_s']:5.1f} s"
          f"  x{event['speed']:.3f}  {verdict}", file=out, flush=True)  # fmt: skip

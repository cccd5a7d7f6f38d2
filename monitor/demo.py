"""``castwatch demo``: the main job end to end on local defaults, in well under a minute.

Starts the local PostgreSQL (``castwatch db up``'s server, database
``castwatch_demo`` so that it never mixes with your own catalogue), adds a
small synthesised catalogue with its rights-holders, registers a stream and
its licence, then plays a degraded excerpt of one recording the way a radio
would (3 % fast, a presenter-level noise bed, a phone-line band limit) and
identifies it: recording, holders, times, and whether the stream was licensed.
Re-running it reuses what is already there.
"""

from __future__ import annotations

import sys
import tempfile
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
from monitor.rights.db import local_server
from monitor.rights.commands import describe_matches
from monitor.settings import Settings

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


def run(workdir: Path | None = None, settings: Settings | None = None, out: TextIO = sys.stdout) -> int:
    """Set up, degrade, identify; print what happens. Returns 0 when the excerpt is found."""
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
    return 0 if found and found[0].title == title and found[0].licensed is False else 1

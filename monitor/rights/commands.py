"""The rights-database subcommands of ``castwatch``: db, catalog, holders, streams, licences, identify.

Each ``cmd_*`` takes parsed arguments, prints for a person (or JSON with
``--json``) and returns an exit code; failures are raised and mapped to
messages in ``monitor.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from tqdm import tqdm

from fingerprint.audio import audio_files
from monitor.rights import catalog, identify, licences, migrations
from monitor.rights.db import connect, database_url, local_server, open_checked
from monitor.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
RECONNECT_ATTEMPTS = 8  # with exponential backoff: rides out about a minute without the database


@contextmanager
def _db(settings: Settings, url: str | None = None) -> Iterator[psycopg.Connection]:
    conn = open_checked(url or database_url(settings))
    try:
        yield conn
    finally:
        conn.close()


def _json(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


# ---- db ------------------------------------------------------------------------------------------


def cmd_db_up(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database_url:
        print("CASTWATCH_DATABASE_URL is set: castwatch uses that server and starts none", file=sys.stderr)
        print(settings.database_url)
        return EXIT_OK
    print(database_url(settings))
    return EXIT_OK


def cmd_db_down(args: argparse.Namespace, settings: Settings) -> int:
    if settings.database_url:
        print("CASTWATCH_DATABASE_URL is set: there is no local server to stop", file=sys.stderr)
        return EXIT_FAILED
    server = local_server(settings)
    print("stopped" if server.stop() else f"not running ({server.datadir})", file=sys.stderr)
    return EXIT_OK


def cmd_db_url(args: argparse.Namespace, settings: Settings) -> int:
    print(database_url(settings, start_local=False))
    return EXIT_OK


def cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.database_url or database_url(settings)
    with connect(url) as conn:
        done = migrations.migrate(conn)
    for m in done:
        print(f"applied {m.version:04d}_{m.name}", file=sys.stderr)
    print(f"schema at version {len(migrations.available())}" + ("" if done else " (nothing to do)"), file=sys.stderr)
    return EXIT_OK


def cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        row = conn.execute(
            """SELECT (SELECT max(version) FROM schema_migrations), generation,
                      (SELECT count(*) FROM tracks WHERE removed_at IS NULL),
                      (SELECT coalesce(sum(duration_s), 0) FROM tracks WHERE removed_at IS NULL),
                      (SELECT coalesce(sum(n_postings), 0) FROM fingerprints),
                      (SELECT count(*) FROM holders), (SELECT count(*) FROM streams),
                      (SELECT count(*) FROM licences WHERE revoked_at IS NULL),
                      pg_database_size(current_database())
               FROM catalogue_state"""
        ).fetchone()
    assert row is not None
    status = dict(
        zip(
            ("schema_version", "catalogue_generation", "tracks", "audio_hours", "postings", "holders", "streams",
             "licences_active", "database_bytes"),
            (row[0], row[1], row[2], round(float(row[3]) / 3600, 3), int(row[4]), row[5], row[6], row[7], row[8]),
        )
    )  # fmt: skip
    if args.json:
        print(_json(status))
    else:
        for key, value in status.items():
            print(f"{key:22s} {value}")
    return EXIT_OK


# ---- catalog -------------------------------------------------------------------------------------


def _owners(args: argparse.Namespace) -> tuple[catalog.Owner, ...]:
    territory = catalog.normalise_territory(args.territory)
    return tuple(catalog.Owner(h, args.share, territory) for h in args.holder or ())


def cmd_catalog_add(args: argparse.Namespace, settings: Settings) -> int:
    metas: dict[Path, catalog.TrackMeta] = {}
    if args.manifest:
        metas = catalog.read_manifest(Path(args.manifest))
    files = [Path(f) for f in audio_files(args.sources)] if args.sources else []
    if args.manifest and not args.sources:
        files = list(metas)
    if not files:
        raise catalog.CatalogError("no audio files found in the given paths")
    if (args.title or args.artist or args.isrc) and len(files) != 1:
        raise catalog.CatalogError("--title, --artist and --isrc describe one file; use --manifest for several")
    default = catalog.TrackMeta(args.title, args.artist or "", catalog.normalise_isrc(args.isrc), _owners(args))
    missing = [f for f in files if not metas.get(f.resolve(), default).owners and not default.owners]
    if missing:
        raise catalog.CatalogError(
            f"{missing[0]}: no rights-holder given (use --holder NAME, or a holder column in the manifest)"
        )
    url = database_url(settings)
    spare: list[psycopg.Connection] = []

    def reconnect() -> psycopg.Connection:
        spare.append(open_checked(url, attempts=RECONNECT_ATTEMPTS))
        return spare[-1]

    with _db(settings, url) as conn:
        started = time.perf_counter()
        with tqdm(
            total=len(files), unit="file", disable=args.quiet or None, file=sys.stderr, dynamic_ncols=True
        ) as bar:
            seconds = 0.0

            def on_file(path: Path, outcome: str, audio_s: float) -> None:
                nonlocal seconds
                bar.update(1)
                seconds += audio_s
                if outcome.startswith("failed"):
                    bar.write(f"error: {outcome[len('failed: '):]}", file=sys.stderr)
                elif outcome not in ("added", "restored"):
                    bar.write(f"{path}: {outcome}, skipped", file=sys.stderr)
                bar.set_postfix_str(f"{seconds / max(time.perf_counter() - started, 1e-9):.0f}x realtime")

            try:
                report = catalog.add(conn, files, metas, default, jobs=args.jobs, on_file=on_file, reconnect=reconnect)
            finally:
                for extra in spare:
                    extra.close()
    if not args.quiet:
        print(
            f"{len(report.added)} added, {len(report.restored)} restored, {len(report.already)} already in the"
            f" catalogue, {len(report.failed)} failed; {report.audio_seconds / 3600:.2f} h of audio in"
            f" {report.elapsed_s:.1f} s ({report.audio_seconds / max(report.elapsed_s, 1e-9):.0f}x realtime)",
            file=sys.stderr,
        )
    if args.json:
        for path, track_id in report.added + report.restored:
            print(_json({"path": str(path), "track_id": track_id}))
    return EXIT_FAILED if report.failed else EXIT_OK


def _track_json(t: catalog.TrackInfo) -> dict[str, object]:
    return {
        "id": t.id,
        "title": t.title,
        "artist": t.artist,
        "isrc": t.isrc,
        "duration_s": round(t.duration_s, 3),
        "source": t.source,
        "added_at": t.added_at,
        "removed": t.removed,
        "holders": [{"name": h, "territory": terr, "share": s} for h, terr, s in t.owners],
        "postings": t.n_postings,
    }


def cmd_catalog_ls(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        for t in catalog.list_tracks(conn, holder=args.holder, include_removed=args.removed):
            if args.json:
                print(_json(_track_json(t)))
            else:
                holders = ", ".join(f"{h} {s:g}%" + ("" if terr == "WW" else f" ({terr})") for h, terr, s in t.owners)
                flag = " [removed]" if t.removed else ""
                print(f"{t.id:6d}  {t.duration_s:7.1f} s  {t.isrc or '-':12s}  {t.artist} - {t.title}  [{holders}]{flag}")
    return EXIT_OK


def cmd_catalog_show(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        t = catalog.show(conn, args.track_id)
    if args.json:
        print(_json(_track_json(t)))
    else:
        for key, value in _track_json(t).items():
            print(f"{key:12s} {value}")
    return EXIT_OK


def cmd_catalog_rm(args: argparse.Namespace, settings: Settings) -> int:
    failed = 0
    with _db(settings) as conn:
        for track_id in args.track_ids:
            try:
                catalog.remove(conn, track_id)
                print(f"track {track_id} removed from matching (kept for reports)", file=sys.stderr)
            except catalog.CatalogError as e:
                failed += 1
                print(f"error: {e}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# ---- holders -------------------------------------------------------------------------------------


def cmd_holders_add(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        with conn.transaction():
            holder = catalog.holder_id(conn, args.name)
    print(holder)
    return EXIT_OK


def cmd_holders_ls(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        rows = conn.execute(
            """SELECT h.id, h.name, count(DISTINCT o.track_id) FILTER (WHERE t.removed_at IS NULL)
               FROM holders h LEFT JOIN ownership o ON o.holder_id = h.id LEFT JOIN tracks t ON t.id = o.track_id
               GROUP BY h.id ORDER BY h.name"""
        ).fetchall()
    for holder_id, name, tracks in rows:
        print(_json({"id": holder_id, "name": name, "tracks": tracks}) if args.json else f"{holder_id:6d}  {name}  ({tracks} tracks)")
    return EXIT_OK


# ---- streams -------------------------------------------------------------------------------------


def cmd_streams_add(args: argparse.Namespace, settings: Settings) -> int:
    stream = licences.Stream(args.stream_id, args.name or "", args.licensee, args.territory, args.timezone, args.url)
    with _db(settings) as conn:
        licences.add_stream(conn, stream, replace=args.replace)
    return EXIT_OK


def cmd_streams_import(args: argparse.Namespace, settings: Settings) -> int:
    streams = licences.read_stream_csv(Path(args.csv))
    with _db(settings) as conn, conn.transaction():
        for stream in streams:
            licences.add_stream(conn, stream, replace=args.replace)
    print(f"{len(streams)} streams imported", file=sys.stderr)
    return EXIT_OK


def cmd_streams_ls(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        for s in licences.list_streams(conn):
            if args.json:
                print(_json(s.__dict__))
            else:
                print(f"{s.id:20s} {s.territory}  {s.timezone:16s} {s.licensee:24s} {s.name}  {s.source_url or ''}")
    return EXIT_OK


def cmd_streams_rm(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        licences.remove_stream(conn, args.stream_id)
    return EXIT_OK


# ---- licences ------------------------------------------------------------------------------------


def cmd_licences_add(args: argparse.Namespace, settings: Settings) -> int:
    spec = licences.LicenceSpec(
        licensee=args.licensee,
        kind="per-track" if args.track is not None else "blanket",
        territories=tuple(args.territory),
        valid_from=licences.parse_time(args.valid_from, "--from"),
        valid_until=licences.parse_time(args.valid_until, "--until") if args.valid_until else None,
        holder=args.holder,
        track_id=args.track,
        note=args.note or "",
    )
    with _db(settings) as conn:
        print(licences.add_licence(conn, spec))
    return EXIT_OK


def cmd_licences_import(args: argparse.Namespace, settings: Settings) -> int:
    specs = licences.read_licence_csv(Path(args.csv))
    with _db(settings) as conn:
        ids = licences.import_all(conn, specs)
    print(f"{len(ids)} licences imported (ids {ids[0]}-{ids[-1]})" if ids else "no licences in the file", file=sys.stderr)
    return EXIT_OK


def cmd_licences_ls(args: argparse.Namespace, settings: Settings) -> int:
    with _db(settings) as conn:
        rows = licences.list_licences(conn, args.licensee)
    for r in rows:
        if args.json:
            print(_json(r.__dict__))
            continue
        what = f"all of {r.holder}" if r.kind == "blanket" else f"track {r.track_id}" + (f" ({r.holder} share)" if r.holder else "")
        until = r.valid_until.date().isoformat() if r.valid_until else "open-ended"
        revoked = f"  REVOKED {r.revoked_at:%Y-%m-%d}" if r.revoked_at else ""
        print(f"{r.id:5d}  {r.licensee:24s} {what:32s} {' '.join(r.territories):10s} {r.valid_from.date()} .. {until}{revoked}")
    return EXIT_OK


def cmd_licences_revoke(args: argparse.Namespace, settings: Settings) -> int:
    at = licences.parse_time(args.at, "--at") if args.at else None
    with _db(settings) as conn:
        when = licences.revoke_licence(conn, args.licence_id, at)
    print(f"licence {args.licence_id} revoked from {when.isoformat()}", file=sys.stderr)
    return EXIT_OK


# ---- identify ------------------------------------------------------------------------------------


def describe_matches(source: str, found: list[identify.Identified]) -> str:
    if not found:
        return f"{source}: no match"
    lines = [f"{source}:"]
    for f in found:
        m = f.match
        holders = ", ".join(f"{o.holder} {o.share:g}%" + ("" if o.territory == "WW" else f" ({o.territory})") for o in f.owners)
        lines.append(
            f"  track {f.track_id}: {f.artist + ' - ' if f.artist else ''}{f.title}"
            + (f" [{f.isrc}]" if f.isrc else "")
            + f"  holders: {holders or 'none on record'}"
        )
        lines.append(
            f"    query {m.query_start:.1f}-{m.query_end:.1f} s = recording {m.ref_start:.1f}-{m.ref_end:.1f} s,"
            f" speed x{m.speed:.3f}, score {m.score:.2f} ({m.count} landmarks)"
        )
        if f.licensed is not None:
            lines.append(f"    {'LICENSED' if f.licensed else 'NOT LICENSED'}: {f.licence_reason}")
    return "\n".join(lines)


def cmd_identify(args: argparse.Namespace, settings: Settings) -> int:
    at = licences.parse_time(args.at, "--at") if args.at else datetime.now(timezone.utc)
    failures = 0
    with _db(settings) as conn:
        index = identify.cached_index(conn, settings.cache_dir)
        identifier = identify.Identifier(conn, index, stream=args.stream, at=at)
        for source in args.sources:
            try:
                found = identifier.identify(source)
            except identify.IdentifyError as e:
                failures += 1
                print(f"error: {e}", file=sys.stderr)
                if args.json:
                    print(_json({"query": source, "error": str(e)}), flush=True)
                continue
            if args.json:
                print(_json({"query": source, "matches": [f.as_json() for f in found]}), flush=True)
            else:
                print(describe_matches(source, found), flush=True)
    return EXIT_FAILED if failures else EXIT_OK

"""The ``castwatch`` command. One place maps failures to messages and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import psycopg

from monitor.settings import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from monitor import demo

    return demo.run(args.workdir, settings)


def _cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.kafka.local import broker_url, local_broker

    if args.action == "url":
        print(broker_url(settings, start_local=False))
    elif settings.broker_url:
        print(f"CASTWATCH_BROKER_URL is set: castwatch uses {settings.broker_url} and manages no broker", file=sys.stderr)
        return EXIT_FAILED if args.action == "down" else 0
    elif args.action == "up":
        print(broker_url(settings))
    else:
        broker = local_broker(settings)
        print("stopped" if broker.stop() else f"not running ({broker.datadir})", file=sys.stderr)
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from monitor import metrics
    from monitor.app import FaustWorker, create_app
    from monitor.events import DurableStore
    from monitor.kafka.local import broker_url
    from monitor.kafka.topics import ensure_topics
    from monitor.rights.db import database_url
    from monitor.rights.snapshot import LiveCatalogue
    from monitor.worker import Recordings, Worker

    db = database_url(settings)
    broker = broker_url(settings)
    asyncio.run(ensure_topics(broker, args.partitions, security=settings.kafka_security))
    recordings = Recordings(db)
    with LiveCatalogue(db, on_index=metrics.index_changed) as live:
        print(
            f"castwatch worker: {live.index.n_tracks} recordings ({live.index.seconds / 3600:.1f} h) from {db.split('@')[-1]},"
            f" broker {broker}, metrics on http://{settings.web_host}:{args.web_port}/metrics, health on /livez and /readyz",
            file=sys.stderr,
        )
        store = DurableStore(db)
        worker = Worker(lambda: live.index, lambda: live.book, recordings.get, store.saved_state)
        app = create_app(
            broker, worker, store, args.web_port, settings.cache_dir / "faust" / args.group, app_id=args.group,
            web_host=settings.web_host, security=settings.kafka_security, stall_seconds=settings.stall_seconds,
        )  # fmt: skip
        try:
            FaustWorker(app, loglevel=args.loglevel, quiet=True).execute_from_commandline()
        finally:
            store.close()
            recordings.close()
    return 0


def _cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from monitor.rights.db import database_url, open_checked
    from monitor.web.server import access_for, serve

    access = access_for(args.host, settings.dashboard_token, args.operator or getpass.getuser())
    db = database_url(settings)
    open_checked(db).close()
    who = "operators name themselves" if access.token else f"acting as {access.operator}"
    print(f"castwatch dashboard on http://{args.host}:{args.port}/ ({db.split('@')[-1]}; {who})", file=sys.stderr)
    serve(db, args.host, args.port, access)
    return 0


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from monitor import ingest
    from monitor.kafka.local import broker_url

    url = broker_url(settings)
    summary = ingest.run_until_signalled(
        lambda stop: ingest.ingest(
            args.source, args.stream, url, topic=args.topic, rate=args.rate, chunk_seconds=args.chunk_seconds,
            fast=args.fast, stop=stop, security=settings.kafka_security,
        )
    )  # fmt: skip
    if summary.stopped:
        print(f"stopped: {summary.chunks} chunks ({summary.audio_seconds:.1f} s of audio) sent and flushed", file=sys.stderr)
    return 0


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from fingerprint.audio import audio_files
    from monitor import ingest, simulate
    from monitor.kafka.local import broker_url

    if not args.catalogue_dir.is_dir():
        raise simulate.SimulationError(f"--catalogue-dir {args.catalogue_dir}: not a directory")
    files = audio_files([str(args.catalogue_dir)])
    url = broker_url(settings)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        ingest.run_until_signalled(
            lambda stop: simulate.simulate(
                files, args.streams, args.minutes, args.seed, url, out, topic=args.topic, prefix=args.prefix,
                rate=args.rate, chunk_seconds=args.chunk_seconds, codec_kbps=args.codec_kbps, fast=args.fast,
                stop=stop, security=settings.kafka_security,
            )
        )  # fmt: skip
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from monitor import reports
    from monitor.rights.db import database_url, open_checked

    request = reports.Request(args.holder, reports.period(args.start, args.end, args.timezone), tuple(args.stream or ()))
    with open_checked(database_url(settings)) as conn:
        reports.save(conn, request, args.format, args.out)
    return 0


def _add_capture_commands(sub: argparse._SubParsersAction) -> None:
    from monitor.ingest import DEFAULT_CHUNK_SECONDS, DEFAULT_RATE, TOPIC

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fast", action="store_true", help="send as fast as the broker takes it, not in real time")
        p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS, help="audio per chunk (default 2)")
        p.add_argument("--rate", type=int, default=DEFAULT_RATE, help=f"sample rate of the chunks (default {DEFAULT_RATE})")
        p.add_argument("--topic", default=TOPIC, help=f"Kafka topic (default {TOPIC})")

    ing = sub.add_parser("ingest", help="capture a file or URL (HTTP, Icecast, HLS) into audio chunks on Kafka")
    ing.add_argument("source", metavar="SOURCE", help="an audio file, or a URL (captured until SIGINT/SIGTERM)")
    ing.add_argument("--stream", required=True, help="the stream id (the Kafka key of its chunks)")
    common(ing)
    ing.set_defaults(run=_cmd_ingest)

    sim = sub.add_parser("simulate", help="publish simulated broadcasts of catalogue recordings; print the truth")
    sim.add_argument("--streams", type=int, required=True, help="how many streams")
    sim.add_argument("--minutes", type=float, required=True, help="broadcast length of each stream")
    sim.add_argument("--seed", type=int, default=0, help="same seed, same broadcasts (default 0)")
    sim.add_argument("--catalogue-dir", type=Path, required=True, help="catalogue recordings (WAV, FLAC, OGG, ...)")
    sim.add_argument("--out", type=Path, help="truth file, JSON lines (default: stdout)")
    sim.add_argument("--prefix", default="sim", help="stream ids are PREFIX-1 .. PREFIX-N (default sim)")
    sim.add_argument("--codec-kbps", type=int, help="pass every item through MP3 at this bitrate")
    common(sim)
    sim.set_defaults(run=_cmd_simulate)


def _add_rights_commands(sub: argparse._SubParsersAction) -> None:
    from fingerprint.cli import jobs_arg
    from monitor.rights import commands as c

    jobs = max(1, os.cpu_count() or 1)

    db = sub.add_parser("db", help="the rights database: local server, migrations, status").add_subparsers(
        dest="action", required=True
    )
    db.add_parser("up", help="start the local PostgreSQL (if CASTWATCH_DATABASE_URL is unset); print its URL").set_defaults(run=c.cmd_db_up)
    db.add_parser("down", help="stop the local PostgreSQL").set_defaults(run=c.cmd_db_down)
    db.add_parser("url", help="print the database URL castwatch uses").set_defaults(run=c.cmd_db_url)
    db.add_parser("migrate", help="apply the schema migrations that are missing").set_defaults(run=c.cmd_db_migrate)
    status = db.add_parser("status", help="schema version and catalogue size")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=c.cmd_db_status)

    cat = sub.add_parser("catalog", help="reference recordings: add, list, show, remove").add_subparsers(
        dest="action", required=True
    )
    add = cat.add_parser("add", help="fingerprint audio files into the catalogue")
    add.add_argument("sources", metavar="FILE_OR_DIR", nargs="*", help="audio files, or directories to scan")
    add.add_argument("--holder", action="append", help="rights-holder (repeat for co-owners; created if new)")
    add.add_argument("--share", type=float, default=100.0, help="each --holder's share in percent (default 100)")
    add.add_argument("--territory", default="WW", help="where the ownership holds: ISO code or WW (default)")
    add.add_argument("--title", help="title (one file only; default: the file name)")
    add.add_argument("--artist", help="artist (one file only)")
    add.add_argument("--isrc", help="ISRC (one file only)")
    add.add_argument("--manifest", help="CSV: path,title,artist,isrc,holder,share,territory")
    add.add_argument("--jobs", "-j", type=jobs_arg, default=jobs, help=f"extraction processes (default {jobs})")
    add.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    add.add_argument("--json", action="store_true", help="print each added track's id as JSON")
    add.set_defaults(run=c.cmd_catalog_add)
    ls = cat.add_parser("ls", help="list the catalogue")
    ls.add_argument("--holder", help="only this rights-holder's recordings")
    ls.add_argument("--removed", action="store_true", help="include removed recordings")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=c.cmd_catalog_ls)
    show = cat.add_parser("show", help="one recording in full")
    show.add_argument("track_id", metavar="ID", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=c.cmd_catalog_show)
    rm = cat.add_parser("rm", help="stop matching recordings (their rows stay for reports)")
    rm.add_argument("track_ids", metavar="ID", type=int, nargs="+")
    rm.set_defaults(run=c.cmd_catalog_rm)

    holders = sub.add_parser("holders", help="rights-holders").add_subparsers(dest="action", required=True)
    h_add = holders.add_parser("add", help="register a rights-holder (prints its id)")
    h_add.add_argument("name")
    h_add.set_defaults(run=c.cmd_holders_add)
    h_ls = holders.add_parser("ls", help="list rights-holders")
    h_ls.add_argument("--json", action="store_true")
    h_ls.set_defaults(run=c.cmd_holders_ls)

    streams = sub.add_parser("streams", help="monitored stations and streams").add_subparsers(dest="action", required=True)
    s_add = streams.add_parser("add", help="register a stream")
    s_add.add_argument("stream_id", metavar="ID", help="the stream id (the Kafka key of its audio chunks)")
    s_add.add_argument("--licensee", required=True, help="who broadcasts it (the party licences are granted to)")
    s_add.add_argument("--territory", required=True, help="ISO 3166-1 alpha-2 code where it broadcasts")
    s_add.add_argument("--name", help="display name")
    s_add.add_argument("--timezone", default="UTC", help="the station's IANA time zone (default UTC)")
    s_add.add_argument("--url", help="source URL for `castwatch ingest`")
    s_add.add_argument("--replace", action="store_true", help="update the stream if it exists")
    s_add.set_defaults(run=c.cmd_streams_add)
    s_imp = streams.add_parser("import", help="register streams from a CSV: id,name,licensee,territory,timezone,source_url")
    s_imp.add_argument("csv")
    s_imp.add_argument("--replace", action="store_true", help="update streams that exist")
    s_imp.set_defaults(run=c.cmd_streams_import)
    s_ls = streams.add_parser("ls", help="list streams")
    s_ls.add_argument("--json", action="store_true")
    s_ls.set_defaults(run=c.cmd_streams_ls)
    s_rm = streams.add_parser("rm", help="remove a stream without detections")
    s_rm.add_argument("stream_id", metavar="ID")
    s_rm.set_defaults(run=c.cmd_streams_rm)

    lic = sub.add_parser("licences", help="broadcast licences").add_subparsers(dest="action", required=True)
    l_add = lic.add_parser("add", help="grant a licence (blanket with --holder alone, per-track with --track)")
    l_add.add_argument("--licensee", required=True)
    l_add.add_argument("--holder", help="the licensing rights-holder (blanket: all their recordings)")
    l_add.add_argument("--track", type=int, help="one recording (per-track licence)")
    l_add.add_argument("--territory", action="append", required=True, help="ISO code or WW; repeat for several")
    l_add.add_argument("--from", dest="valid_from", required=True, help="start, ISO date or date-time")
    l_add.add_argument("--until", dest="valid_until", help="end (exclusive); open-ended if omitted")
    l_add.add_argument("--note")
    l_add.set_defaults(run=c.cmd_licences_add)
    l_imp = lic.add_parser(
        "import", help="grant licences from a CSV: licensee,kind,holder,track,territories,valid_from,valid_until,note"
    )
    l_imp.add_argument("csv")
    l_imp.set_defaults(run=c.cmd_licences_import)
    l_ls = lic.add_parser("ls", help="list licences")
    l_ls.add_argument("--licensee")
    l_ls.add_argument("--json", action="store_true")
    l_ls.set_defaults(run=c.cmd_licences_ls)
    l_rv = lic.add_parser("revoke", help="revoke a licence (plays before the revocation stay licensed)")
    l_rv.add_argument("licence_id", metavar="ID", type=int)
    l_rv.add_argument("--at", help="revocation time (default now)")
    l_rv.set_defaults(run=c.cmd_licences_revoke)

    ident = sub.add_parser("identify", help="identify audio files against the catalogue")
    ident.add_argument("sources", metavar="FILE", nargs="+", help="audio files or URLs")
    ident.add_argument("--stream", help="say whether this stream was licensed for each match")
    ident.add_argument("--at", help="broadcast time for the licence check (default now)")
    ident.add_argument("--json", action="store_true", help="one JSON object per file and line")
    ident.set_defaults(run=c.cmd_identify)


def _add_gan_commands(sub: argparse._SubParsersAction) -> None:
    from fingerprint.gan import commands as g
    from fingerprint.gan.robustness import DEFAULT_BUDGETS_DB

    def weights(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", type=Path, help="generator weights (.npz; default: the ones shipped in the package)")

    gan = sub.add_parser("gan", help="the embedded GAN generator of test and adversarial audio").add_subparsers(
        dest="action", required=True
    )
    train = gan.add_parser("train", help="train the generator on music (default: the public benchmark corpus)")
    train.add_argument("--corpus", type=Path, help="folder of music files (default: the public corpus, fetched once)")
    train.add_argument("--out", type=Path, default=Path("gan-run"), help="where to write weights, log, samples (default gan-run)")
    train.add_argument("--steps", type=int, default=10000, help="generator updates (default 10000)")
    train.add_argument("--seed", type=int, default=1, help="same corpus and seed, same weights (default 1)")
    train.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: reproducible, fast on a busy machine)")
    train.add_argument("--stats-clips", type=int, default=16, help="clips per source in the statistics comparison (default 16)")
    train.set_defaults(run=lambda args, settings: g.cmd_train(args))
    sample = gan.add_parser("sample", help="write generated music to a WAV file (8 kHz)")
    sample.add_argument("out", metavar="OUT.wav", type=Path)
    sample.add_argument("--seconds", type=float, required=True, help="length in seconds")
    sample.add_argument("--seed", type=int, required=True, help="same seed, same audio")
    weights(sample)
    sample.set_defaults(run=lambda args, settings: g.cmd_sample(args))

    attack = sub.add_parser("attack", help="search generated overlays that hide a recording from the matcher")
    attack.add_argument("reference", metavar="REFERENCE", help="the recording to attack (an audio file)")
    attack.add_argument("--budget-db", type=float, required=True, help="SNR of recording to overlay in the mix (dB)")
    attack.add_argument("--out", type=Path, required=True, help="folder for adversarial.wav, overlay.wav, attack.json")
    attack.add_argument("--start", type=float, help="excerpt start in seconds (default: the middle of the recording)")
    attack.add_argument("--seconds", type=float, default=10.0, help="excerpt length (default 10)")
    attack.add_argument("--evaluations", type=int, default=60, help="matcher calls the search may spend (default 60)")
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--max-speed", type=float, default=0.0, help="also change the speed by up to this fraction (e.g. 0.03)")
    attack.add_argument("--max-pitch", type=float, default=0.0, help="also shift the pitch by up to this fraction (e.g. 0.02)")
    attack.add_argument("--max-eq-db", type=float, default=0.0, help="also equalise 4 bands by up to this many dB")
    weights(attack)
    attack.set_defaults(run=lambda args, settings: g.cmd_attack(args))

    rob = sub.add_parser("robustness", help="recall under white noise, random and adversarial overlays, per SNR budget")
    rob.add_argument("--references", type=int, default=20, help="how many references (default 20)")
    rob.add_argument("--generated", action="store_true", help="use generated recordings, not the public corpus")
    rob.add_argument("--corpus", type=Path, help="folder of reference recordings (default: the public corpus)")
    rob.add_argument("--budgets", default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS_DB), help="SNR budgets in dB (default 20,10,5,0)")
    rob.add_argument("--evaluations", type=int, default=40, help="matcher calls per adversarial search (default 40)")
    rob.add_argument("--quick", action="store_true", help=f"{g.QUICK_REFERENCES} generated references, {g.QUICK_EVALUATIONS} evaluations: seconds")
    rob.add_argument("--seed", type=int, default=0)
    rob.add_argument("--out", type=Path, default=Path("robustness"), help="folder for the table, plot and outcomes (default robustness)")
    rob.add_argument("--quiet", "-q", action="store_true", help="no per-outcome progress")
    weights(rob)
    rob.set_defaults(run=lambda args, settings: g.cmd_robustness(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="castwatch", description="Broadcast copyright monitoring.")
    parser.add_argument("--verbose", "-v", action="store_true", help="log what happens behind the scenes")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="the main job on local defaults: local PostgreSQL, a demo catalogue and licence, identify a broadcast excerpt")
    p_demo.add_argument("--workdir", type=Path, help="where to write the demo files (default: a new temp dir)")
    p_demo.set_defaults(run=_cmd_demo)
    _add_rights_commands(sub)
    worker = sub.add_parser("worker", help="the monitoring daemon: audio chunks from Kafka to plays, detections, infringements")
    worker.add_argument(
        "--web-port", type=int, default=6066, help="HTTP port for metrics and health (default 6066; host: CASTWATCH_WEB_HOST)"
    )
    worker.add_argument("--partitions", type=int, default=4, help="partitions of topics it creates (default 4)")
    worker.add_argument("--group", default="castwatch-worker", help="Kafka consumer group (workers of one deployment share it)")
    worker.add_argument("--loglevel", default="warning", choices=("debug", "info", "warning", "error"))
    worker.set_defaults(run=_cmd_worker)
    _add_capture_commands(sub)
    rep = sub.add_parser("report", help="a rights-holder's report: plays, totals, infringements (docs/reports.md)")
    rep.add_argument("--holder", required=True, help="the rights-holder's name")
    rep.add_argument("--from", dest="start", required=True, metavar="DATE", help="first day (or ISO date-time) of the period")
    rep.add_argument("--to", dest="end", required=True, metavar="DATE", help="end of the period, exclusive")
    rep.add_argument("--timezone", default="UTC", help="IANA zone of the dates and of the per-day totals (default UTC)")
    rep.add_argument("--format", choices=("csv", "html", "json"), default="csv")
    rep.add_argument("--stream", action="append", metavar="ID", help="only this stream (repeat for several)")
    rep.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    rep.set_defaults(run=_cmd_report)
    dash = sub.add_parser("dashboard", help="the live web dashboard: streams, plays, infringements (docs/dashboard.md)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need CASTWATCH_DASHBOARD_TOKEN)")
    dash.add_argument("--port", type=int, default=8088, help="HTTP port (default 8088)")
    dash.add_argument("--operator", help="who acknowledges and resolves, without a token (default: the OS user)")
    dash.set_defaults(run=_cmd_dashboard)
    _add_gan_commands(sub)
    kafka = sub.add_parser("kafka", help="the local Kafka broker (when CASTWATCH_BROKER_URL is unset)")
    kafka.add_argument("action", choices=("up", "down", "url"), help="start it (printing its URL), stop it, or print the URL")
    kafka.set_defaults(run=_cmd_kafka)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fingerprint.audio import AudioError
    from fingerprint.gan import GanError
    from fingerprint.index import IndexFormatError
    from monitor.ingest import IngestError
    from monitor.kafka.local import LocalBrokerError
    from monitor.reports import ReportError
    from monitor.rights.catalog import CatalogError
    from monitor.rights.db import DatabaseError
    from monitor.rights.licences import LicenceError
    from monitor.rights.localdb import LocalDatabaseError
    from monitor.rights.migrations import SchemaError
    from monitor.simulate import SimulationError
    from monitor.settings import SettingsError
    from monitor.web import DashboardError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
        return int(args.run(args, settings))
    except (
        SettingsError,
        LocalDatabaseError,
        DatabaseError,
        SchemaError,
        CatalogError,
        LicenceError,
        IndexFormatError,
        LocalBrokerError,
        IngestError,
        SimulationError,
        AudioError,
        ReportError,
        DashboardError,
        GanError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.OperationalError as e:
        print(f"error: lost the database connection: {str(e).strip()} (nothing half-written was kept; re-run)", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0

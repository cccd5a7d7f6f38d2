"""The rights database itself: migrations, the local server, connection errors. Real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import psycopg
import pytest
from pg import ScratchServer

from monitor import cli
from monitor.rights import migrations
from monitor.rights.db import DatabaseError, connect, open_checked
from monitor.rights.localdb import FIRST_FREE_PORT, LocalServer, ephemeral_ports, find_bindir, free_port


@pytest.fixture
def empty_url(pg_server: ScratchServer) -> str:
    url = pg_server.fresh_database(migrated=False)
    yield url
    pg_server.drop_database(url)


def tables(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrate_creates_the_schema_and_records_it(empty_url: str) -> None:
    with psycopg.connect(empty_url) as conn:
        done = migrations.migrate(conn)
        assert [m.version for m in done] == list(range(1, len(migrations.available()) + 1))
        assert {"holders", "tracks", "ownership", "streams", "licences", "fingerprints", "detections",
                "infringements", "catalogue_state", "schema_migrations"} <= tables(conn)  # fmt: skip
        recorded = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
        assert [(m.version, m.name, m.checksum) for m in migrations.available()] == recorded
        migrations.check(conn)


def test_migrate_again_is_a_no_op(empty_url: str) -> None:
    with psycopg.connect(empty_url) as conn:
        migrations.migrate(conn)
        before = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
        assert migrations.migrate(conn) == []
        assert conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall() == before


def test_check_on_an_empty_database_says_to_migrate(empty_url: str) -> None:
    with psycopg.connect(empty_url) as conn, pytest.raises(migrations.SchemaError, match="castwatch db migrate"):
        migrations.check(conn)


def test_schema_newer_than_the_code_is_refused(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')")
    conn.commit()
    with pytest.raises(migrations.SchemaError, match="newer than this castwatch"):
        migrations.check(conn)
    with pytest.raises(migrations.SchemaError, match="upgrade castwatch"):
        migrations.migrate(conn)


def test_missing_migration_is_reported(conn: psycopg.Connection) -> None:
    last = len(migrations.available())
    conn.execute("DELETE FROM schema_migrations WHERE version = %s", (last,))
    conn.commit()
    with pytest.raises(migrations.SchemaError, match="run `castwatch db migrate`"):
        migrations.check(conn)


def test_edited_migration_is_caught(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    conn.commit()
    with pytest.raises(migrations.SchemaError, match="must never be edited"):
        migrations.check(conn)


def test_failed_migration_leaves_nothing(empty_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = migrations.available()
    broken = [*real, migrations.Migration(len(real) + 1, "broken", "CREATE TABLE half (x int); SELECT 1/0;")]
    monkeypatch.setattr(migrations, "available", lambda: broken)
    with psycopg.connect(empty_url) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrations.migrate(conn)
        conn.rollback()
        assert "half" not in tables(conn)
        assert "tracks" not in tables(conn)  # all of one run is one transaction


def test_open_checked_and_wrong_urls(db_url: str, empty_url: str, pg_server: ScratchServer) -> None:
    open_checked(db_url).close()
    with pytest.raises(migrations.SchemaError):
        open_checked(empty_url)
    with pytest.raises(DatabaseError, match="not a valid PostgreSQL URL"):
        connect("postgresql://[broken")
    closed = f"postgresql://castwatch@127.0.0.1:{free_port()}/castwatch"
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL at castwatch@127.0.0.1"):
        connect(closed, attempts=2, backoff_s=0.01)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reports_an_unreachable_database(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://castwatch@127.0.0.1:{free_port()}/castwatch"
    code, _, err = run_cli(["catalog", "ls"], monkeypatch, capsys, CASTWATCH_DATABASE_URL=url)
    assert code == 1
    assert err.startswith("error: cannot connect to PostgreSQL") and "CASTWATCH_DATABASE_URL" in err


def test_cli_reports_missing_schema(empty_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["catalog", "ls"], monkeypatch, capsys, CASTWATCH_DATABASE_URL=empty_url)
    assert code == 1 and "run `castwatch db migrate`" in err
    code, _, err = run_cli(["db", "migrate"], monkeypatch, capsys, CASTWATCH_DATABASE_URL=empty_url)
    assert code == 0 and "applied 0001_catalogue" in err
    code, out, _ = run_cli(["db", "status", "--json"], monkeypatch, capsys, CASTWATCH_DATABASE_URL=empty_url)
    assert code == 0 and f'"schema_version": {len(migrations.available())}' in out and '"tracks": 0' in out


def test_cli_rejects_a_bad_port_setting(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CASTWATCH_DATABASE_URL", raising=False)
    code, _, err = run_cli(["db", "url"], monkeypatch, capsys, CASTWATCH_PGPORT="http")
    assert code == 1 and "CASTWATCH_PGPORT='http'" in err


def test_local_server_up_url_down(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="castwatch-localdb-"))
    os.chmod(root, 0o755)
    port = str(free_port())
    monkeypatch.delenv("CASTWATCH_DATABASE_URL", raising=False)
    env = {"CASTWATCH_PGDATA": str(root / "pg"), "CASTWATCH_PGPORT": port}
    try:
        code, out, _ = run_cli(["db", "url"], monkeypatch, capsys, **env)
        assert code == 0 and out.strip() == f"postgresql://castwatch@127.0.0.1:{port}/castwatch"
        code, out, _ = run_cli(["db", "up"], monkeypatch, capsys, **env)
        assert code == 0 and out.strip().endswith(f":{port}/castwatch")
        with psycopg.connect(out.strip()) as conn:
            migrations.check(conn)  # `db up` leaves a migrated database
        code, out2, _ = run_cli(["db", "up"], monkeypatch, capsys, **env)  # again: already running
        assert code == 0 and out2 == out
        code, _, err = run_cli(["db", "down"], monkeypatch, capsys, **env)
        assert code == 0 and "stopped" in err
        code, _, err = run_cli(["db", "down"], monkeypatch, capsys, **env)
        assert code == 0 and "not running" in err
        code, out3, _ = run_cli(["db", "up"], monkeypatch, capsys, **env)  # restart keeps the data
        assert code == 0 and out3 == out
    finally:
        LocalServer(root / "pg", int(port), find_bindir()).stop()
        shutil.rmtree(root, ignore_errors=True)


def test_local_server_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "precious.txt").write_text("keep me")
    server = LocalServer(tmp_path / "pg", free_port(), find_bindir())
    with pytest.raises(Exception, match="not empty and is not a PostgreSQL data directory"):
        server.start()
    assert (tmp_path / "pg" / "precious.txt").read_text() == "keep me"


def test_missing_binaries_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="install Debian's postgresql"):
        find_bindir(tmp_path)


ROLES_SQL = Path(__file__).resolve().parent.parent / "deploy" / "postgres" / "roles.sql"


def login_as(db_url: str, group: str) -> str:
    """A login role in ``group`` (roles are cluster-wide: unique name per test database)."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    name = f"{group}_{dbname}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(ROLES_SQL.read_text())
        admin.execute(ROLES_SQL.read_text())  # re-running is safe
        admin.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
            psycopg.sql.Identifier(name), psycopg.sql.Identifier(group)))  # fmt: skip
    return psycopg.conninfo.make_conninfo(db_url, user=name)


def test_worker_role_reads_the_catalogue_and_writes_detections_only(db_url: str, recordings: list[Path]) -> None:
    from monitor.rights import catalog
    from monitor.rights.catalog import Owner, TrackMeta
    from monitor.rights.licences import load_book
    from monitor.rights.snapshot import load_snapshot

    with psycopg.connect(db_url) as admin:
        catalog.add(admin, recordings[:1], {}, TrackMeta(owners=(Owner("Acme"),)))
        admin.execute("INSERT INTO streams (id, name, licensee, territory) VALUES ('s1', 'S', 'L', 'FR')")
        admin.commit()
    worker_url = login_as(db_url, "castwatch_worker")
    with psycopg.connect(worker_url) as worker:
        migrations.check(worker)
        worker.commit()
        assert load_snapshot(worker).index.n_tracks == 1
        assert "s1" in load_book(worker).streams
        worker.execute(
            """INSERT INTO detections (event_id, stream_id, track_id, started_at, ref_start_s, score, speed, licensed, state)
               VALUES (gen_random_uuid(), 's1', 1, now(), 0, 0.5, 1.0, false, 'started')"""
        )
        worker.execute("INSERT INTO infringements (detection_id) SELECT event_id FROM detections")
        worker.execute("UPDATE detections SET state = 'ended', ended_at = now()")
        worker.commit()
        for forbidden in (
            "INSERT INTO holders (name) VALUES ('Mallory')",
            "UPDATE licences SET revoked_at = NULL",
            "DELETE FROM fingerprints",
            "DELETE FROM detections",
            "UPDATE tracks SET title = 'x'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                worker.execute(forbidden)
            worker.rollback()


def test_curator_role_manages_the_catalogue(db_url: str, recordings: list[Path]) -> None:
    from monitor.rights import catalog
    from monitor.rights.catalog import Owner, TrackMeta

    curator_url = login_as(db_url, "castwatch_curator")
    with psycopg.connect(curator_url) as curator:
        report = catalog.add(curator, recordings[:1], {}, TrackMeta(owners=(Owner("Acme"),)))
        assert len(report.added) == 1
        catalog.remove(curator, report.added[0][1])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            curator.execute("DELETE FROM detections")


def test_dashboard_role_reads_and_acknowledges_only(db_url: str) -> None:
    import asyncio
    import uuid

    from monitor.web.data import act, overview

    event_id = uuid.uuid4()
    with psycopg.connect(db_url) as admin:
        admin.execute("INSERT INTO tracks (title, duration_s, content_sha256, source) VALUES ('T', 60, sha256('t'), 'x')")
        admin.execute(
            """INSERT INTO detections (event_id, stream_id, track_id, started_at, ref_start_s, score, speed, licensed, state)
               VALUES (%s, 's1', 1, now(), 0, 0.5, 1.0, false, 'started')""",
            (event_id,),
        )
        admin.execute("INSERT INTO infringements (detection_id) VALUES (%s)", (event_id,))
    dashboard_url = login_as(db_url, "castwatch_dashboard")

    async def acknowledge() -> tuple[dict, dict]:
        async with await psycopg.AsyncConnection.connect(dashboard_url) as conn:
            return await overview(conn), await act(conn, event_id, "acknowledge", "ann", "seen")

    seen, done = asyncio.run(acknowledge())
    assert [i["event_id"] for i in seen["infringements"]] == [str(event_id)]
    assert (done["status"], done["updated_by"]) == ("acknowledged", "ann")
    with psycopg.connect(dashboard_url) as dashboard:
        assert dashboard.execute("SELECT operator, action FROM infringement_actions").fetchall() == [("ann", "acknowledge")]
        for forbidden in (
            "UPDATE infringements SET created_at = now()",
            "UPDATE detections SET licensed = true",
            "DELETE FROM infringement_actions",
            "UPDATE infringement_actions SET operator = 'someone else'",
            "DELETE FROM infringements",
            "INSERT INTO holders (name) VALUES ('Mallory')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                dashboard.execute(forbidden)
            dashboard.rollback()
    with psycopg.connect(login_as(db_url, "castwatch_reader")) as reader:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("UPDATE infringements SET status = 'resolved'")


def test_free_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    """Outgoing connections take ephemeral ports: a scratch server's port must not be one of them."""
    low, high = ephemeral_ports()
    assert 1024 <= low < high
    for _ in range(50):
        port = free_port()
        assert FIRST_FREE_PORT <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

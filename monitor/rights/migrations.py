"""Versioned SQL migrations: ``migrations/NNNN_name.sql``, applied in order.

Each migration runs in its own transaction together with its row in
``schema_migrations``, so a failed migration leaves nothing half-applied and
re-running ``castwatch db migrate`` is a no-op once all are in. An advisory
lock keeps two processes from migrating at once. The checksum of each applied
file is recorded so that an edited, already-applied migration is caught
instead of silently diverging.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x63617374  # "cast": advisory lock key for migrations


class SchemaError(RuntimeError):
    """The database schema is missing, older or newer than this code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with this code, in version order."""
    found = []
    for entry in resources.files("monitor.rights").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migration files must be numbered 0001, 0002, ... without gaps; found {versions}")
    return found


def _ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version     integer PRIMARY KEY,
               name        text NOT NULL,
               checksum    text NOT NULL,
               applied_at  timestamptz NOT NULL DEFAULT now())"""
    )


def applied(conn: psycopg.Connection) -> dict[int, str]:
    """version -> checksum of the migrations recorded in the database ({} if none)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply what is missing; return the migrations applied now."""
    shipped = available()
    done: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        _ensure_table(conn)
        have = applied(conn)
        _check_known(have, shipped)
        for migration in shipped:
            if migration.version in have:
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())  # type: ignore[call-overload]
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            done.append(migration)
    return done


def _check_known(have: dict[int, str], shipped: list[Migration]) -> None:
    newer = sorted(v for v in have if v > len(shipped))
    if newer:
        raise SchemaError(
            f"the database schema is at version {max(have)}, newer than this castwatch (knows up to"
            f" {len(shipped)}): upgrade castwatch before using this database"
        )
    for migration in shipped:
        if migration.version in have and have[migration.version] != migration.checksum:
            raise SchemaError(
                f"migration {migration.version:04d}_{migration.name} was applied from a different file"
                " (checksum differs): migrations must never be edited once applied; add a new one"
            )


def check(conn: psycopg.Connection) -> None:
    """Raise SchemaError unless the database is exactly at this code's version."""
    shipped = available()
    have = applied(conn)
    if not have:
        raise SchemaError("the database has no castwatch schema: run `castwatch db migrate`")
    _check_known(have, shipped)
    missing = [m for m in shipped if m.version not in have]
    if missing:
        raise SchemaError(
            f"the database schema is at version {max(have)}, this castwatch needs {len(shipped)}:"
            " run `castwatch db migrate`"
        )

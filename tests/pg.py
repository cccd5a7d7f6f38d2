"""A real PostgreSQL server for the tests: one per test session, a fresh database per test.

The session starts the machine's PostgreSQL binaries (Debian's package, which
``scripts/bootstrap`` installs) in a temporary directory on a free port, with
fsync off. The schema is migrated once into a template database; each test
gets its own copy (``CREATE DATABASE ... TEMPLATE``, a few tens of ms), so
tests neither see nor clean up after each other.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator

import psycopg

from monitor.rights import migrations
from monitor.rights.localdb import scratch_server

TEMPLATE = "castwatch_template"


class ScratchServer:
    def __init__(self) -> None:
        self.server = scratch_server(durable=False, prefix="castwatch-test-pg-")
        self._names = itertools.count()

    def start(self) -> None:
        self.server.start()
        url = self.server.create_database(TEMPLATE)
        with psycopg.connect(url) as conn:
            migrations.migrate(conn)

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            shutil.rmtree(self.server.datadir.parent, ignore_errors=True)

    def fresh_database(self, migrated: bool = True) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        return self.server.create_database(name, template=TEMPLATE if migrated else None)

    def drop_database(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.server.url_for("postgres"), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )


def session_server() -> Iterator[ScratchServer]:
    server = ScratchServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()

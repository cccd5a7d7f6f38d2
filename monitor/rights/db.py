"""Connections to the rights database: which URL, retries with backoff, clear errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar
import psycopg

from monitor.rights import migrations
from monitor.rights.localdb import LocalServer, find_bindir
from monitor.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT_S = 10


class DatabaseError(RuntimeError):
    """The rights database cannot be reached or used; the message says what to do."""


def local_server(settings: Settings, durable: bool = True) -> LocalServer:
    return LocalServer(settings.pgdata, settings.pgport, find_bindir(settings.pg_bindir), durable)


def database_url(settings: Settings, start_local: bool = True) -> str:
    """The configured URL, or the local server's (started and migrated if need be)."""
    if settings.database_url:
        return settings.database_url
    server = local_server(settings)
    if not start_local:
        return server.url
    if not server.running():
        log.info("starting the local PostgreSQL in %s on port %d", server.datadir, server.port)
    url = server.start()
    with connect(url) as conn:
        migrations.migrate(conn)
    return url


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable URL>"
    host = info.get("host", "localhost")
    return f"{info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(
    url: str, autocommit: bool = False, attempts: int = 1, backoff_s: float = 0.5, purpose: str = "castwatch"
) -> psycopg.Connection:
    """Open a connection, retrying ``attempts`` times with exponential backoff.

    ``purpose`` becomes the session's application_name, so that operators see
    in pg_stat_activity which castwatch part holds which connection.
    """
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise DatabaseError(f"CASTWATCH_DATABASE_URL is not a valid PostgreSQL URL: {e}") from e
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return psycopg.connect(
                url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S, application_name=purpose
            )
        except psycopg.OperationalError as e:
            if attempt == attempts:
                raise DatabaseError(
                    f"cannot connect to PostgreSQL at {_redact(url)}: {str(e).strip()}"
                    " (check CASTWATCH_DATABASE_URL, or unset it to use the local server of `castwatch db up`)"
                ) from e
            log.warning("PostgreSQL at %s unreachable (attempt %d of %d): %s", _redact(url), attempt, attempts, e)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def open_checked(url: str, autocommit: bool = False, attempts: int = 1) -> psycopg.Connection:
    """A connection to a database whose schema is exactly this code's version."""
    conn = connect(url, autocommit=autocommit, attempts=attempts)
    try:
        migrations.check(conn)
        if not autocommit:
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


class Reconnecting:
    """One connection that comes back: ``run`` retries an action after a lost connection, forever.

    For the worker, which must not drop what it has to store: a database
    outage stalls it (each failed attempt logged and counted in
    ``failures``, backoff 0.2 s doubling to ``max_backoff_s``) and it goes
    on when the database is back.
    """

    def __init__(self, url: str, purpose: str, max_backoff_s: float = 10.0, autocommit: bool = False) -> None:
        self._url = url
        self._purpose = purpose
        self._autocommit = autocommit
        self._max_backoff_s = max_backoff_s
        self._conn: psycopg.Connection | None = None
        self.failures = 0

    def run(self, what: str, action: Callable[[psycopg.Connection], T]) -> T:
        delay = 0.2
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self._url, autocommit=self._autocommit, application_name=self._purpose, connect_timeout=5
                    )
                return action(self._conn)
            except psycopg.OperationalError as e:
                self.failures += 1
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, str(e).strip())
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                time.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

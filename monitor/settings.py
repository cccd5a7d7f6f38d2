"""castwatch's configuration: one frozen dataclass read from ``CASTWATCH_*`` variables.

Nothing else in the package reads ``os.environ``. Every value has a default
that works against the local services the project starts itself.

=============================  ==============================================
``CASTWATCH_DATABASE_URL``     PostgreSQL to use (libpq URL). Unset: a local
                               server managed by ``castwatch db up``.
``CASTWATCH_PGDATA``           data directory of that local server
                               (default: ``~/.local/share/castwatch/postgres``,
                               ``/var/lib/castwatch/postgres`` for root).
``CASTWATCH_PGPORT``           its TCP port on 127.0.0.1 (default 55432).
``CASTWATCH_PG_BINDIR``        where ``initdb``/``pg_ctl`` live (default:
                               found under ``/usr/lib/postgresql``).
``CASTWATCH_CACHE_DIR``        cached index snapshots for ``identify``
                               (default: ``~/.cache/castwatch``).
=============================  ==============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PGPORT = 55432


class SettingsError(ValueError):
    """A ``CASTWATCH_*`` variable holds a value castwatch cannot use."""


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r}: expected a TCP port number") from e
    if not 1 <= port <= 65535:
        raise SettingsError(f"{name}={raw!r}: a TCP port is between 1 and 65535")
    return port


def _default_pgdata(environ: Mapping[str, str]) -> Path:
    if os.geteuid() == 0:
        # PostgreSQL runs as an unprivileged user, which cannot enter /root.
        return Path("/var/lib/castwatch/postgres")
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "castwatch" / "postgres"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    pgdata: Path
    pgport: int
    pg_bindir: Path | None
    cache_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        cache = env.get("CASTWATCH_CACHE_DIR") or str(
            Path(env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "castwatch"
        )
        bindir = env.get("CASTWATCH_PG_BINDIR")
        return cls(
            database_url=env.get("CASTWATCH_DATABASE_URL") or None,
            pgdata=Path(env.get("CASTWATCH_PGDATA") or _default_pgdata(env)),
            pgport=_port(env, "CASTWATCH_PGPORT", DEFAULT_PGPORT),
            pg_bindir=Path(bindir) if bindir else None,
            cache_dir=Path(cache),
        )

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
``CASTWATCH_CACHE_DIR``        cached index snapshots for ``identify`` and
                               the Kafka jars (default: ``~/.cache/castwatch``).
``CASTWATCH_BROKER_URL``       Kafka bootstrap servers (``host:port[,...]``).
                               Unset: a local broker (monitor/kafka/local.py).
``CASTWATCH_KAFKA_DATA``       data directory of that local broker (default:
                               ``~/.local/share/castwatch/kafka``).
``CASTWATCH_KAFKA_PORT``       its client port on 127.0.0.1 (default 59092;
                               its controller listens on the next port).
``CASTWATCH_KAFKA_HOME``       where its jars live, in ``libs/`` (default:
                               ``CASTWATCH_CACHE_DIR/kafka/VERSION``; fetched
                               from Maven Central on first use when empty).
``CASTWATCH_JAVA``             the ``java`` that runs it (default: on PATH).
``CASTWATCH_DASHBOARD_TOKEN``  the secret ``castwatch dashboard`` asks of every
                               request (at least 16 characters). Required
                               when it binds to anything but loopback.
``CASTWATCH_WEB_HOST``         address the worker's web server (metrics,
                               health) binds to (default ``127.0.0.1``;
                               ``0.0.0.0`` in a container).
``CASTWATCH_STALL_SECONDS``    the worker's liveness check fails when chunks
                               wait and none was processed for this long
                               (default 300).
``CASTWATCH_KAFKA_SECURITY``   ``PLAINTEXT`` (default), ``SSL``,
                               ``SASL_PLAINTEXT`` or ``SASL_SSL``.
``CASTWATCH_KAFKA_SASL_MECHANISM``  ``PLAIN``, ``SCRAM-SHA-256`` (default) or
                               ``SCRAM-SHA-512``; SASL only.
``CASTWATCH_KAFKA_USERNAME``   SASL user name (required with SASL).
``CASTWATCH_KAFKA_PASSWORD``   SASL password (required with SASL).
``CASTWATCH_KAFKA_CA_FILE``    PEM file of the CA that signed the brokers'
                               certificates (TLS; default: the system's).
``CASTWATCH_KAFKA_CERT_FILE``  client certificate (PEM) for mutual TLS, with
``CASTWATCH_KAFKA_KEY_FILE``   its private key (PEM).
=============================  ==============================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PGPORT = 55432
DEFAULT_KAFKA_PORT = 59092
MIN_TOKEN_LENGTH = 16


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


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds") from e
    if not seconds > 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of seconds")
    return seconds


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How castwatch's Kafka clients authenticate and encrypt (monitor/kafka/security.py applies it)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-256"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "KafkaSecurity":
        protocol = (env.get("CASTWATCH_KAFKA_SECURITY") or "PLAINTEXT").upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(f"CASTWATCH_KAFKA_SECURITY={protocol!r}: expected one of {', '.join(KAFKA_PROTOCOLS)}")
        mechanism = (env.get("CASTWATCH_KAFKA_SASL_MECHANISM") or "SCRAM-SHA-256").upper()
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"CASTWATCH_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of {', '.join(SASL_MECHANISMS)}"
            )
        names = ("CASTWATCH_KAFKA_CA_FILE", "CASTWATCH_KAFKA_CERT_FILE", "CASTWATCH_KAFKA_KEY_FILE")
        files = {name: env.get(name) or None for name in names}
        ca, cert, key = (Path(value) if value else None for value in files.values())
        security = cls(
            protocol=protocol,
            sasl_mechanism=mechanism,
            username=env.get("CASTWATCH_KAFKA_USERNAME") or None,
            password=env.get("CASTWATCH_KAFKA_PASSWORD") or None,
            ca_file=ca,
            cert_file=cert,
            key_file=key,
        )
        if security.sasl and not (security.username and security.password):
            raise SettingsError(
                f"CASTWATCH_KAFKA_SECURITY={protocol} needs CASTWATCH_KAFKA_USERNAME and CASTWATCH_KAFKA_PASSWORD"
            )
        if not security.tls and any(files.values()):
            given = ", ".join(name for name, value in files.items() if value)
            raise SettingsError(f"{given} set but CASTWATCH_KAFKA_SECURITY={protocol}: use SSL or SASL_SSL for TLS")
        if (security.cert_file is None) != (security.key_file is None):
            raise SettingsError("CASTWATCH_KAFKA_CERT_FILE and CASTWATCH_KAFKA_KEY_FILE go together (mutual TLS)")
        return security


def _data_home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share"))


def _default_pgdata(environ: Mapping[str, str]) -> Path:
    if os.geteuid() == 0:
        # PostgreSQL runs as an unprivileged user, which cannot enter /root.
        return Path("/var/lib/castwatch/postgres")
    return _data_home(environ) / "castwatch" / "postgres"


def _default_kafka_data(environ: Mapping[str, str]) -> Path:
    return _data_home(environ) / "castwatch" / "kafka"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    pgdata: Path
    pgport: int
    pg_bindir: Path | None
    cache_dir: Path
    # Kafka settings have defaults so that code building Settings by hand for
    # the database alone (tests, tools) need not spell them out.
    broker_url: str | None = None
    kafka_data: Path = field(default_factory=lambda: _default_kafka_data(os.environ))
    kafka_port: int = DEFAULT_KAFKA_PORT
    kafka_home: Path | None = None
    java: Path | None = None
    dashboard_token: str | None = None
    web_host: str = "127.0.0.1"
    stall_seconds: float = 300.0
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        cache = env.get("CASTWATCH_CACHE_DIR") or str(
            Path(env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "castwatch"
        )
        bindir = env.get("CASTWATCH_PG_BINDIR")
        kafka_home = env.get("CASTWATCH_KAFKA_HOME")
        java = env.get("CASTWATCH_JAVA")
        kafka_port = _port(env, "CASTWATCH_KAFKA_PORT", DEFAULT_KAFKA_PORT)
        if kafka_port == 65535:
            raise SettingsError("CASTWATCH_KAFKA_PORT=65535: the local broker's controller needs the next port too")
        token = env.get("CASTWATCH_DASHBOARD_TOKEN") or None
        if token is not None and (len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token):
            raise SettingsError(
                f"CASTWATCH_DASHBOARD_TOKEN: expected at least {MIN_TOKEN_LENGTH} printable characters without spaces"
                f" (found {len(token)}); make one with `openssl rand -hex 16`"
            )
        return cls(
            database_url=env.get("CASTWATCH_DATABASE_URL") or None,
            pgdata=Path(env.get("CASTWATCH_PGDATA") or _default_pgdata(env)),
            pgport=_port(env, "CASTWATCH_PGPORT", DEFAULT_PGPORT),
            pg_bindir=Path(bindir) if bindir else None,
            cache_dir=Path(cache),
            broker_url=env.get("CASTWATCH_BROKER_URL") or None,
            kafka_data=Path(env.get("CASTWATCH_KAFKA_DATA") or _default_kafka_data(env)),
            kafka_port=kafka_port,
            kafka_home=Path(kafka_home) if kafka_home else None,
            java=Path(java) if java else None,
            dashboard_token=token,
            web_host=env.get("CASTWATCH_WEB_HOST") or "127.0.0.1",
            stall_seconds=_seconds(env, "CASTWATCH_STALL_SECONDS", 300.0),
            kafka_security=KafkaSecurity.from_env(env),
        )

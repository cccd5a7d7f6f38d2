"""A local PostgreSQL server for development, the demo and the tests.

Used when ``CASTWATCH_DATABASE_URL`` is not set. It runs the machine's
PostgreSQL server binaries (Debian's ``postgresql`` package; ``scripts/bootstrap``
installs it) on 127.0.0.1 only, with ``trust`` authentication, which is fine
for a loopback development server and nothing else. PostgreSQL refuses to run
as root, so when castwatch runs as root the server runs as the ``postgres``
user (or ``nobody``) and owns its data directory.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

DATABASE = "castwatch"
SUPERUSER = "castwatch"
START_TIMEOUT_S = 60


class LocalDatabaseError(RuntimeError):
    """The local PostgreSQL server could not be set up, started or stopped."""


def find_bindir(configured: Path | None = None) -> Path:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if configured is not None:
        candidates.append(configured)
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
        )
        candidates.extend(reversed(versions))
        initdb = shutil.which("initdb")
        if initdb:
            candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    where = str(configured) if configured is not None else "PATH, pg_config and /usr/lib/postgresql"
    raise LocalDatabaseError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {where}: install Debian's postgresql"
        " package (scripts/bootstrap does), set CASTWATCH_PG_BINDIR, or point CASTWATCH_DATABASE_URL"
        " at an existing server"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise LocalDatabaseError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@dataclass(frozen=True)
class LocalServer:
    """One local cluster: a data directory and a port on 127.0.0.1."""

    datadir: Path
    port: int
    bindir: Path
    durable: bool = True  # False (tests): fsync off, for speed

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        user = _server_user()
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}
        try:
            result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
        except OSError as e:
            raise LocalDatabaseError(f"cannot run {args[0]}: {e}") from e
        if check and result.returncode != 0:
            raise LocalDatabaseError(
                f"{Path(args[0]).name} failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()}"
            )
        return result

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def running(self) -> bool:
        if not self.initialised:
            return False
        return self._run([str(self.bindir / "pg_ctl"), "status", "-D", str(self.datadir)], check=False).returncode == 0

    def _init(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if any(self.datadir.iterdir()):
            raise LocalDatabaseError(f"{self.datadir} exists, is not empty and is not a PostgreSQL data directory")
        user = _server_user()
        if user is not None:
            os.chown(self.datadir, user.pw_uid, user.pw_gid)
            for parent in self.datadir.parents:  # the server user must be able to reach its directory
                if parent.stat().st_mode & 0o001 == 0:
                    raise LocalDatabaseError(
                        f"{parent} is not searchable by the {user.pw_name} user that runs PostgreSQL;"
                        " choose another CASTWATCH_PGDATA"
                    )
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )  # fmt: skip
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.datadir}'",
            "timezone = 'UTC'",
            "log_timezone = 'UTC'",
        ]
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# castwatch local server\n" + "\n".join(settings) + "\n")

    def start(self) -> str:
        """Initialise if needed, start if stopped, create the database; return its URL."""
        if not self.initialised:
            self._init()
        if not self.running():
            log = self.datadir / "server.log"
            result = self._run(
                [
                    str(self.bindir / "pg_ctl"), "start", "-D", str(self.datadir), "-l", str(log),
                    "-w", "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}",
                ],
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                tail = ""
                if log.exists():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
                raise LocalDatabaseError(
                    f"PostgreSQL in {self.datadir} did not start on port {self.port}: "
                    f"{(result.stderr or result.stdout).strip()}\n{tail}"
                )
        self.create_database(DATABASE)
        return self.url

    def create_database(self, name: str, template: str | None = None) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                    if not exists:
                        sql = psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
                        if template:
                            sql += psycopg.sql.SQL(" TEMPLATE {}").format(psycopg.sql.Identifier(template))
                        conn.execute(sql)
                return self.url_for(name)
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise LocalDatabaseError(f"cannot connect to the local PostgreSQL on port {self.port}: {e}") from e
                time.sleep(0.2)

    def stop(self) -> bool:
        """Stop the server; False if it was not running."""
        if not self.running():
            return False
        self._run([str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"])
        return True


FIRST_FREE_PORT = 15000  # free_port draws from here up to the kernel's ephemeral range


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default if it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range.

    ``bind(0)`` would hand out an ephemeral port, and the kernel hands the
    same ports to outgoing connections: a Kafka or PostgreSQL client could
    take it before the server we start binds it (the server then fails with
    "port taken"). Below that range only servers that ask for a port get one.
    """
    low = ephemeral_ports()[0]
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(FIRST_FREE_PORT, low) if low > FIRST_FREE_PORT + 100 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free TCP port on 127.0.0.1 between {FIRST_FREE_PORT} and {low}")


def scratch_server(durable: bool = False, prefix: str = "castwatch-pg-") -> LocalServer:
    """A server in a new temporary directory on a free port (for tests and benchmarks).

    Remove it with ``server.stop()`` then ``shutil.rmtree(server.datadir.parent)``.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # the server may run as another user (when we are root)
    return LocalServer(root / "data", free_port(), find_bindir(), durable=durable)

"""A local Apache Kafka broker for development, the demo and the tests.

Used when ``CASTWATCH_BROKER_URL`` is not set. Kafka 4.x runs straight from its
jars on Maven Central: ``deploy/kafka/pom.xml`` names them and Maven copies
them, once, into ``KAFKA_HOME/libs`` (a cache; see :func:`ensure_libs`). The
broker is one KRaft node that is its own controller, listening on 127.0.0.1
only, with every replication factor at 1: fine for a development machine and
nothing else.

The broker runs in its own session, detached from the Python process that
started it, so that ``start`` and ``stop`` work from different processes (as
``pg_ctl`` does for PostgreSQL); a pid file in the data directory finds it again.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from monitor.rights.localdb import free_port
from monitor.settings import Settings

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
NODE_ID = 1
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
FETCH_TIMEOUT_S = 600
# A small heap is plenty for a development broker; the serial collector keeps
# it from running GC threads on the (shared, small) machine's every core.
BROKER_JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# The storage formatter is a one-shot JVM: C1 alone starts it faster.
TOOL_JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class LocalBrokerError(RuntimeError):
    """The local Kafka broker could not be fetched, set up, started or stopped."""


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version that ``deploy/kafka/pom.xml`` fetches (it names the jar cache)."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as e:
        raise LocalBrokerError(
            f"cannot read {pom} ({e}): the local broker runs from a castwatch source checkout;"
            " set CASTWATCH_KAFKA_HOME to a directory whose libs/ holds Kafka 4.x jars,"
            " or CASTWATCH_BROKER_URL to use another broker"
        ) from e
    version = root.findtext("pom:properties/pom:kafka.version", namespaces={"pom": "http://maven.apache.org/POM/4.0.0"})
    if not version:
        raise LocalBrokerError(f"{pom} has no <kafka.version> property")
    return version.strip()


def kafka_home(settings: Settings) -> Path:
    """``CASTWATCH_KAFKA_HOME``, or the cache directory of the pom's Kafka version."""
    if settings.kafka_home is not None:
        return settings.kafka_home
    return settings.cache_dir / "kafka" / kafka_version()


def find_java(configured: Path | None = None) -> Path:
    """The ``java`` executable that runs the broker: ``CASTWATCH_JAVA``, else the one on PATH."""
    if configured is not None:
        if configured.is_file() and os.access(configured, os.X_OK):
            return configured
        raise LocalBrokerError(
            f"CASTWATCH_JAVA={configured} is not an executable file: point it at the java of a"
            " Java 17+ runtime, or unset it to use the java on PATH"
        )
    found = shutil.which("java")
    if found is None:
        raise LocalBrokerError(
            "java not found on PATH: the local Kafka broker needs a Java 17+ runtime"
            " (Debian: apt-get install default-jre-headless; scripts/bootstrap does), or set"
            " CASTWATCH_JAVA, or CASTWATCH_BROKER_URL to use another broker"
        )
    return Path(found)


def _has_kafka_jar(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob("kafka_2.13-*.jar"))


def ensure_libs(home: Path, pom: Path = POM) -> Path:
    """``home/libs``, holding the broker's jars; fetched with Maven first if it is missing or empty.

    Maven copies into ``libs.partial`` which is renamed when complete, so an
    interrupted fetch is redone rather than half-used. A lock serialises
    concurrent first uses (two test runs, a test run and the demo).
    """
    libs = home / "libs"
    if _has_kafka_jar(libs):
        return libs
    if libs.is_dir() and any(libs.iterdir()):
        raise LocalBrokerError(
            f"{libs} holds no kafka_2.13-*.jar: remove that directory so that castwatch fetches"
            " the jars again, or point CASTWATCH_KAFKA_HOME at a Kafka 4.x installation"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalBrokerError(
            f"the Kafka jars are not in {libs} yet and fetching them needs Maven, which is not on PATH:"
            " install it (Debian: apt-get install maven; scripts/bootstrap does), or set"
            " CASTWATCH_KAFKA_HOME to a Kafka 4.x installation"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
        with open(home / ".fetch.lock", "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _has_kafka_jar(libs):  # another process fetched them while we waited
                return libs
            partial = home / "libs.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _run(
                [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
                what=f"fetching the Kafka jars ({pom} via Maven Central)",
                timeout_s=FETCH_TIMEOUT_S,
            )  # fmt: skip
            if not _has_kafka_jar(partial):
                raise LocalBrokerError(f"Maven ran but copied no kafka_2.13 jar into {partial}: check {pom}")
            if libs.is_dir():
                libs.rmdir()  # empty, checked above
            partial.rename(libs)
    except OSError as e:
        raise LocalBrokerError(f"cannot fetch the Kafka jars into {home}: {e}") from e
    return libs


def _run(args: list[str], what: str, timeout_s: float, cwd: Path | None = None) -> str:
    """Run a tool to completion; its output on success, a LocalBrokerError saying ``what`` failed otherwise."""
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=timeout_s, cwd=cwd, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LocalBrokerError(f"{what} failed: {e}") from e
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LocalBrokerError(f"{what} failed (exit {result.returncode}):\n{output}")
    return result.stdout


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: 16 random bytes, base64url, no padding.

    Like Kafka's ``Uuid.randomUuid`` it never starts with '-', which command
    lines would read as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _broker_args(pid: int) -> list[str]:
    """Command line of process ``pid`` (empty if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _port_in_use(port: int) -> bool:
    """Whether something listens on ``port`` (connections of a stopped broker in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def _broker_listed(url: str) -> bool:
    """Whether a metadata request to ``url`` lists our node: it is unfenced and serves clients."""
    client = AIOKafkaClient(bootstrap_servers=url, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return any(broker.nodeId == NODE_ID for broker in client.cluster.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()


def _exit_status(process: subprocess.Popen[bytes] | None) -> str:
    """`` (exit status N)`` or `` (killed by SIGNAME)`` once ``process`` has ended (its logs are then complete)."""
    if process is None:
        return ""
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    return f" (killed by {signal.Signals(-code).name})" if code < 0 else f" (exit status {code})"


@dataclass(frozen=True)
class LocalBroker:
    """One local KRaft node: a data directory and two ports on 127.0.0.1 (clients, controller).

    ``java`` None means the java on PATH. The methods block; from async code
    call them through ``asyncio.to_thread`` (the readiness check runs its own
    event loop).
    """

    datadir: Path
    port: int
    controller_port: int
    home: Path
    java: Path | None = None

    @property
    def url(self) -> str:
        """Bootstrap servers for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def properties(self) -> Path:
        return self.datadir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """The broker's own logs (``server.log``, and ``stdout.log`` for what the JVM prints)."""
        return self.datadir / "logs"

    @property
    def data_dir(self) -> Path:
        """Kafka's ``log.dirs``: topic partitions and the KRaft metadata log."""
        return self.datadir / "data"

    @property
    def pid_file(self) -> Path:
        return self.datadir / "broker.pid"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def pid(self) -> int | None:
        """Process id of the running broker of this data directory, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is this broker, not a stranger that inherited a stale pid."""
        args = _broker_args(pid)
        return "kafka.Kafka" in args and str(self.properties) in args

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Fetch the jars and format the storage if need be, start if stopped, wait until ready; return the URL."""
        deadline = time.monotonic() + timeout_s
        pid = self.pid()
        process: subprocess.Popen[bytes] | None = None  # None: started earlier, maybe by another process
        if pid is None:
            java = find_java(self.java)
            classpath = f"{ensure_libs(self.home)}/*"
            for port in (self.port, self.controller_port):
                if _port_in_use(port):
                    raise LocalBrokerError(
                        f"port {port} on 127.0.0.1 is taken by another program: stop it, or choose another"
                        " CASTWATCH_KAFKA_PORT (the broker uses that port and the next)"
                    )
            self._write_config()
            if not self.formatted:
                self._format(java, classpath)
            process = self._launch(java, classpath)
            pid = process.pid
        self._wait_ready(pid, deadline, timeout_s, process)
        return self.url

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker (SIGTERM: a clean shutdown; SIGKILL after ``timeout_s``); False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(pid, wait_s):
                break
        else:
            raise LocalBrokerError(f"the Kafka broker (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        return True

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Stop (cleanly) and start again on the same ports and data; return the URL."""
        self.stop()
        return self.start(timeout_s)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_ours(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _prepare_datadir(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if not self.properties.exists() and any(self.datadir.iterdir()):
            raise LocalBrokerError(
                f"{self.datadir} exists, is not empty and is not a castwatch Kafka data directory:"
                " choose another CASTWATCH_KAFKA_DATA"
            )
        self.log_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)

    def _write_config(self) -> None:
        """Write server.properties and the log4j2 configuration (again at each start, so ports can change)."""
        self._prepare_datadir()
        c = self.controller_port
        settings = [
            "# Written by castwatch (monitor/kafka/local.py) at each start: edits are lost.",
            "process.roles=broker,controller",
            f"node.id={NODE_ID}",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{c}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{c}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "offsets.topic.replication.factor=1",
            # Internal topics with Kafka's default 50 partitions take seconds to
            # create on first use (the first consumer group waits for them).
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
        ]
        self.properties.write_text("\n".join(settings) + "\n", encoding="utf-8")
        log4j = [
            "# Written by castwatch (monitor/kafka/local.py) at each start.",
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {self.log_dir / 'server.log'}",
            f"appender.file.filePattern = {self.log_dir / 'server.log.%i'}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = info",
            "rootLogger.appenderRef.file.ref = file",
            # Every client and server config object logs all its values at INFO: thousands of lines.
            "logger.config.name = org.apache.kafka.common.config.AbstractConfig",
            "logger.config.level = warn",
        ]
        (self.datadir / "log4j2.properties").write_text("\n".join(log4j) + "\n", encoding="utf-8")

    def _log4j_option(self) -> str:
        return f"-Dlog4j2.configurationFile={self.datadir / 'log4j2.properties'}"

    def _format(self, java: Path, classpath: str) -> None:
        """Give the empty data directory a cluster id and this node as the only controller (``--standalone``)."""
        _run(
            [str(java), *TOOL_JVM_OPTIONS, self._log4j_option(), "-cp", classpath, "kafka.tools.StorageTool",
             "format", "--standalone", "-t", new_cluster_id(), "-c", str(self.properties)],
            what=f"formatting the Kafka storage in {self.data_dir}",
            timeout_s=START_TIMEOUT_S,
        )  # fmt: skip

    def _launch(self, java: Path, classpath: str) -> subprocess.Popen[bytes]:
        """Start ``kafka.Kafka`` in the background, in its own session.

        The broker outlives this process if it ends first (``stop`` finds it
        by its pid file from any process). While this process lives, a daemon
        thread waits for the broker, so that it never lingers as our zombie.
        Popen returns only once java is executing, so the pid is the broker's.
        """
        command = [str(java), *BROKER_JVM_OPTIONS, self._log4j_option(), "-cp", classpath, "kafka.Kafka",
                   str(self.properties)]  # fmt: skip
        try:
            with open(self.log_dir / "stdout.log", "w", encoding="utf-8") as stdout_log:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=stdout_log, stderr=subprocess.STDOUT, cwd=self.datadir,
                    start_new_session=True,
                )  # fmt: skip
        except OSError as e:
            raise LocalBrokerError(f"cannot start the Kafka broker in {self.datadir}: {e}") from e
        threading.Thread(target=process.wait, name=f"kafka-broker-{process.pid}", daemon=True).start()
        self.pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
        return process

    def _wait_ready(
        self, pid: int, deadline: float, timeout_s: float, process: subprocess.Popen[bytes] | None
    ) -> None:
        """Wait until a metadata request lists this broker; a clear error with its log if it dies or hangs.

        A broker this process launched is alive until its ``process`` ends;
        /proc is only asked about one started elsewhere (in a test run a
        restarted broker whose /proc command line did not read as the
        broker's was reported as exited, and was still running 10 s later).
        """
        while True:
            alive = process.poll() is None if process is not None else self._is_ours(pid)
            if not alive:
                raise LocalBrokerError(
                    f"the Kafka broker in {self.datadir} exited while starting{_exit_status(process)};"
                    f" its log says:\n{self._log_excerpt()}"
                )
            if _accepts(self.port) and asyncio.run(_broker_listed(self.url)):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise LocalBrokerError(
                    f"the Kafka broker in {self.datadir} was not ready after {timeout_s:.0f} s (stopped it);"
                    f" its log says:\n{self._log_excerpt()}"
                )
            time.sleep(0.1)

    def _log_excerpt(self, lines: int = 8) -> str:
        """The broker's last errors and the JVM's last words, for error messages."""
        parts: list[str] = []
        server_log = self.log_dir / "server.log"
        if server_log.exists():
            log_lines = server_log.read_text(errors="replace").splitlines()
            errors: list[str] = []
            for i, line in enumerate(log_lines):
                if "] ERROR " in line:
                    errors.append(line)
                    cause = log_lines[i + 1] if i + 1 < len(log_lines) else "["
                    if not cause.startswith(("[", "\t")):  # the exception's message, not the next record
                        errors.append(cause)
            parts += errors[-lines:]
        stdout_log = self.log_dir / "stdout.log"
        if stdout_log.exists():
            parts += stdout_log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"(full logs in {self.log_dir})")
        return "\n".join(parts)


def local_broker(settings: Settings) -> LocalBroker:
    """The development broker that ``CASTWATCH_KAFKA_*`` describe."""
    return LocalBroker(
        settings.kafka_data, settings.kafka_port, settings.kafka_port + 1, kafka_home(settings), settings.java
    )


def broker_url(settings: Settings, start_local: bool = True) -> str:
    """``CASTWATCH_BROKER_URL``, or the local broker's (started if need be)."""
    if settings.broker_url:
        return settings.broker_url
    broker = local_broker(settings)
    return broker.start() if start_local else broker.url


def scratch_broker(settings: Settings | None = None, prefix: str = "castwatch-kafka-") -> LocalBroker:
    """A broker in a new temporary directory on free ports (for tests and benchmarks).

    The jars come from ``settings`` (default: the environment's), so tests
    share the one cache. Remove it with ``broker.stop()`` then
    ``shutil.rmtree(broker.datadir.parent)``.
    """
    settings = settings or Settings.from_env()
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    return LocalBroker(root / "broker", port, controller_port, kafka_home(settings), settings.java)

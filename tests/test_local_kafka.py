"""The local Kafka broker (monitor/kafka/local.py) against a real broker, and its errors."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from monitor.kafka.local import (
    LocalBroker,
    LocalBrokerError,
    ensure_libs,
    find_java,
    kafka_home,
    kafka_version,
    local_broker,
    new_cluster_id,
)
from monitor.rights.localdb import free_port
from monitor.settings import DEFAULT_KAFKA_PORT, Settings, SettingsError

from broker import fresh_topic


async def produce(url: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Send every (key, value) and wait until the broker has it (acks=all, idempotent, as the daemon will)."""
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


Received = list[tuple[bytes, bytes, int]]


async def consume(url: str, topic: str, group: str, count: int, timeout_s: float = 20) -> Received:
    """Read ``count`` messages from the start as consumer group ``group``, commit; (key, value, partition) each."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=url, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        received: Received = []
        async with asyncio.timeout(timeout_s):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                received += [(m.key, m.value, m.partition) for msgs in batches.values() for m in msgs]
        await consumer.commit()
        return received
    finally:
        await consumer.stop()


async def committed(url: str, topic: str, group: str, partitions: int) -> int:
    """Sum of the offsets that ``group`` committed on ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
        return sum(offset or 0 for offset in offsets)
    finally:
        await consumer.stop()


def test_round_trip_keeps_per_key_order(kafka_broker: LocalBroker) -> None:
    url = kafka_broker.url

    async def scenario() -> None:
        topic = await fresh_topic(url, "roundtrip", partitions=3)
        messages = [(f"stream-{i % 4}".encode(), f"chunk-{i}".encode()) for i in range(40)]
        await produce(url, topic, messages)
        received = await consume(url, topic, "roundtrip-group", len(messages))
        assert sorted(received) == sorted(set(received)) and len(received) == len(messages)
        for key in {k for k, _ in messages}:
            assert [v for k, v, _ in received if k == key] == [v for k, v in messages if k == key]
            assert len({p for k, _, p in received if k == key}) == 1  # one key, one partition
        assert await committed(url, topic, "roundtrip-group", 3) == len(messages)

    asyncio.run(scenario())


def test_restart_keeps_topics_messages_and_offsets(kafka_broker: LocalBroker) -> None:
    url = kafka_broker.url

    async def before() -> str:
        topic = await fresh_topic(url, "restart", partitions=2)
        await produce(url, topic, [(b"k", f"before-{i}".encode()) for i in range(5)])
        await consume(url, topic, "restart-group", 5)
        return topic

    topic = asyncio.run(before())
    pid = kafka_broker.pid()
    assert kafka_broker.restart() == url
    assert kafka_broker.running() and kafka_broker.pid() != pid

    async def after() -> None:
        # Until the group coordinator has reloaded __consumer_offsets, Kafka 4.x
        # answers OffsetFetch with a group-level COORDINATOR_LOAD_IN_PROGRESS,
        # which aiokafka 0.14 ignores: it reports "no committed offset" then.
        async with asyncio.timeout(20):
            while (offsets := await committed(url, topic, "restart-group", 2)) != 5:
                assert offsets == 0
                await asyncio.sleep(0.2)
        await produce(url, topic, [(b"k", b"after")])
        everything = await consume(url, topic, "restart-other-group", 6)
        assert [v for _, v, _ in everything] == [f"before-{i}".encode() for i in range(5)] + [b"after"]

    asyncio.run(after())


def test_stop_running_start_and_a_start_that_fails(kafka_broker: LocalBroker) -> None:
    assert kafka_broker.running()
    assert kafka_broker.start() == kafka_broker.url  # already running: returns at once
    assert kafka_broker.stop() is True
    assert not kafka_broker.running() and kafka_broker.pid() is None
    assert kafka_broker.stop() is False
    # A stored node id that disagrees with the configuration makes Kafka exit at start-up.
    meta = kafka_broker.data_dir / "meta.properties"
    good = meta.read_text()
    meta.write_text(good.replace("node.id=1", "node.id=7"))
    try:
        dies = r"exited while starting \(exit status 1\)(.|\n)*Stored node id 7 doesn't match"
        with pytest.raises(LocalBrokerError, match=dies):
            kafka_broker.start()
        assert not kafka_broker.running()
    finally:
        meta.write_text(good)
    assert kafka_broker.start() == kafka_broker.url
    assert kafka_broker.running()


def test_jars_are_the_version_the_pom_names(kafka_broker: LocalBroker) -> None:
    version = kafka_version()
    assert version.startswith("4.")
    libs = ensure_libs(kafka_broker.home)
    assert (libs / f"kafka_2.13-{version}.jar").is_file()
    assert any(libs.glob("log4j-slf4j2-impl-*.jar")) and not any(libs.glob("slf4j-api-1.*.jar"))


def test_taken_port_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalBroker(tmp_path / "broker", port, free_port(), kafka_home(Settings.from_env()))
        with pytest.raises(LocalBrokerError, match=f"port {port} on 127.0.0.1 is taken.*CASTWATCH_KAFKA_PORT"):
            broker.start()
    assert not broker.formatted


def test_missing_java_configured_says_what_to_set(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings.from_env({}), kafka_data=tmp_path / "broker", kafka_home=tmp_path / "home", java=tmp_path / "no-java"
    )
    with pytest.raises(LocalBrokerError, match="CASTWATCH_JAVA=.*no-java is not an executable"):
        local_broker(settings).start()
    assert not (tmp_path / "home").exists()  # nothing fetched before the check


def test_no_java_on_path_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalBrokerError, match="install.*default-jre-headless"):
        find_java()


def test_no_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalBrokerError, match="needs Maven.*apt-get install maven"):
        ensure_libs(tmp_path / "home")


def test_bad_libs_directory_is_left_alone(tmp_path: Path) -> None:
    libs = tmp_path / "home" / "libs"
    libs.mkdir(parents=True)
    (libs / "something-else.jar").write_bytes(b"")
    with pytest.raises(LocalBrokerError, match="holds no kafka_2.13-.*jar: remove that directory"):
        ensure_libs(tmp_path / "home")
    assert [p.name for p in libs.iterdir()] == ["something-else.jar"]


def test_foreign_data_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "precious.txt").write_text("keep me")
    broker = LocalBroker(tmp_path / "broker", free_port(), free_port(), kafka_home(Settings.from_env()))
    with pytest.raises(LocalBrokerError, match="not empty and is not a castwatch Kafka data directory"):
        broker.start()
    assert [p.name for p in (tmp_path / "broker").iterdir()] == ["precious.txt"]


def test_settings_for_the_local_broker(tmp_path: Path) -> None:
    defaults = Settings.from_env({"CASTWATCH_CACHE_DIR": str(tmp_path)})
    assert defaults.broker_url is None and defaults.kafka_port == DEFAULT_KAFKA_PORT
    assert kafka_home(defaults) == tmp_path / "kafka" / kafka_version()
    broker = local_broker(defaults)
    assert (broker.port, broker.controller_port, broker.url) == (59092, 59093, "127.0.0.1:59092")
    configured = Settings.from_env(
        {"CASTWATCH_BROKER_URL": "kafka1:9092,kafka2:9092", "CASTWATCH_KAFKA_PORT": "40000",
         "CASTWATCH_KAFKA_HOME": "/opt/kafka", "CASTWATCH_KAFKA_DATA": "/srv/kafka", "CASTWATCH_JAVA": "/usr/bin/java"}
    )  # fmt: skip
    assert configured.broker_url == "kafka1:9092,kafka2:9092"
    assert kafka_home(configured) == Path("/opt/kafka")
    expected = LocalBroker(Path("/srv/kafka"), 40000, 40001, Path("/opt/kafka"), Path("/usr/bin/java"))
    assert local_broker(configured) == expected
    for bad in ("x", "0", "65535"):
        with pytest.raises(SettingsError, match="CASTWATCH_KAFKA_PORT"):
            Settings.from_env({"CASTWATCH_KAFKA_PORT": bad})


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_cli_kafka_up_url_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor import cli

    port = free_port()
    while _taken(port + 1):
        port = free_port()
    monkeypatch.delenv("CASTWATCH_BROKER_URL", raising=False)
    monkeypatch.setenv("CASTWATCH_KAFKA_DATA", str(tmp_path / "kafka"))
    monkeypatch.setenv("CASTWATCH_KAFKA_PORT", str(port))
    try:
        assert cli.main(["kafka", "url"]) == 0
        assert capsys.readouterr().out.strip() == f"127.0.0.1:{port}"
        assert cli.main(["kafka", "down"]) == 0
        assert "not running" in capsys.readouterr().err
        assert cli.main(["kafka", "up"]) == 0
        assert capsys.readouterr().out.strip() == f"127.0.0.1:{port}"
        assert cli.main(["kafka", "down"]) == 0
        assert "stopped" in capsys.readouterr().err
    finally:
        local_broker(Settings.from_env()).stop()
    monkeypatch.setenv("CASTWATCH_BROKER_URL", "kafka.example:9092")
    assert cli.main(["kafka", "url"]) == 0
    assert capsys.readouterr().out.strip() == "kafka.example:9092"
    assert cli.main(["kafka", "down"]) == 1
    assert "manages no broker" in capsys.readouterr().err


def _taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

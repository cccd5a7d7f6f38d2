"""A real Kafka broker for the tests: one per test session, started by the first test that asks.

The session runs the local broker of monitor/kafka/local.py in a temporary
directory on free ports; its jars come from the usual cache
(``CASTWATCH_KAFKA_HOME`` or ``~/.cache/castwatch/kafka/VERSION``), fetched
with Maven on first use. Tests share the broker, so each one makes its own
topics (:func:`fresh_topic`) and consumer groups.

The module is not called ``kafka`` because the tests directory is on
``sys.path`` and would shadow kafka-python's top-level ``kafka`` package.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from monitor.kafka.local import LocalBroker, scratch_broker

_names = itertools.count()


def session_broker() -> Iterator[LocalBroker]:
    broker = scratch_broker(prefix="castwatch-test-kafka-")
    try:
        broker.start()
        yield broker
    finally:
        try:
            broker.stop()
        finally:
            shutil.rmtree(broker.datadir.parent, ignore_errors=True)


async def fresh_topic(url: str, prefix: str = "test", partitions: int = 1) -> str:
    """Create a topic that no other test uses and return its name."""
    name = f"{prefix}.{next(_names)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name

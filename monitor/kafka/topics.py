"""The topics castwatch uses, created with their partition counts when missing."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from monitor.kafka.security import client_options
from monitor.settings import KafkaSecurity

CHUNKS = "audio.chunks.v1"
DLQ = "audio.chunks.dlq.v1"
DETECTIONS = "detections.v1"
INFRINGEMENTS = "infringements.v1"
ALL = (CHUNKS, DLQ, DETECTIONS, INFRINGEMENTS)


async def ensure_topics(
    broker_url: str, partitions: int = 4, replication: int = 1, security: KafkaSecurity = KafkaSecurity()
) -> list[str]:
    """Create the topics that do not exist yet; return their names.

    ``partitions`` bounds how many workers can share the chunk topic (one
    partition is processed by one worker at a time); more can be added later
    with Kafka's tools, at the price of moving streams between partitions.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=broker_url, **client_options(security))
    await admin.start()
    try:
        missing = [t for t in ALL if t not in set(await admin.list_topics())]
        if missing:
            try:
                await admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing])
            except TopicAlreadyExistsError:
                pass  # another process created them meanwhile
        return missing
    finally:
        await admin.close()

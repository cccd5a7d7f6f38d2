"""The worker's consumer watchdog: notice a consumer that stopped fetching, and restart the process.

After a broker restart, faust's consumer can stop fetching for good
(robinhood/faust#596; see docs/daemon.md): the worker looks alive but
consumes nothing. Nothing is
lost (offsets are committed only after events are durable), but nothing is
monitored either. The watchdog looks from outside faust's consumer, with its
own short-lived Kafka clients: when messages wait on partitions this worker
holds, the group's committed offsets have not moved for ``stall_after_s``,
and the agent is not busy with a message (a database outage keeps it busy on
purpose), the consumer has stalled. The worker then replaces itself with a
fresh process (``os.execv``), which is what ``kill -9`` and a restart would
do: state lives in PostgreSQL and Kafka, so the new process resumes from the
committed offsets exactly once in effect.

``Stall`` is the pure decision; ``probe`` reads the offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger(__name__)

STALL_AFTER_S = 30.0  # no committed progress with messages waiting for this long: stalled
PROBE_EVERY_S = 5.0
PROBE_TIMEOUT_S = 10.0


class Stall:
    """Tracks progress of the group's committed offsets on the partitions this worker holds."""

    def __init__(self, stall_after_s: float = STALL_AFTER_S) -> None:
        self.stall_after_s = stall_after_s
        self._committed: dict[int, int] = {}
        self._since: float | None = None  # last progress seen while messages wait

    def observe(self, now: float, committed: dict[int, int], ends: dict[int, int], busy: bool) -> float | None:
        """Seconds without progress while messages wait, once that reaches ``stall_after_s``; else None.

        ``committed`` and ``ends`` are by partition (a partition the group
        never committed counts from 0), ``busy`` whether the agent is working
        on a message right now.
        """
        waiting = any(end > committed.get(partition, 0) for partition, end in ends.items())
        moved = committed != self._committed
        self._committed = dict(committed)
        if not waiting:
            self._since = None
            return None
        if busy or moved or self._since is None:
            self._since = now  # progress (or a first sight of waiting messages): the clock starts now
            return None
        stalled = now - self._since
        return stalled if stalled >= self.stall_after_s else None


async def probe(
    bootstrap: str, group: str, partitions: Iterable[TopicPartition], options: dict[str, Any]
) -> tuple[dict[int, int], dict[int, int]]:
    """(committed, end) offsets by partition of ``partitions``, read with fresh clients (time-limited).

    ``options``: the clients' security settings (``monitor.kafka.security.client_options``).
    """
    partitions = list(partitions)
    timeout_ms = int(PROBE_TIMEOUT_S * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=timeout_ms, **options)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await admin.start()
            await consumer.start()
            offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
            ends = await consumer.end_offsets(partitions)
    finally:
        await asyncio.gather(admin.close(), consumer.stop(), return_exceptions=True)
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if meta is not None and meta.offset >= 0}
    return committed, {tp.partition: int(end) for tp, end in ends.items()}

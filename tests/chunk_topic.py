"""Reading audio chunks back from a topic, for the capture and simulation tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from monitor.chunks import Chunk, decode

_groups = itertools.count()


async def consume_chunks(url: str, topic: str, done: Callable[[list[Chunk]], bool], timeout_s: float = 20) -> list[Chunk]:
    """Decode the topic's messages from the start, in order, until ``done(chunks)``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=url, group_id=f"chunk-reader-{next(_groups)}", auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    chunks: list[Chunk] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not done(chunks):
                batches = await consumer.getmany(timeout_ms=200)
                chunks += [decode(m.key, m.value) for messages in batches.values() for m in messages]
        return chunks
    finally:
        await consumer.stop()

"""The faust app of ``castwatch worker``: topics and one agent, wiring only.

The agent (concurrency 1 per partition; scale with partitions and worker
processes) hands each message to ``Worker.handle`` in a thread (Numba
releases the GIL, the event loop stays free), then makes the outcome durable
before faust may commit the message's offset: a dead letter is sent and
acknowledged by the broker; play events are upserted into PostgreSQL
(retried until the database takes them) and their messages acknowledged.
Every step is idempotent (event ids, upserts), so at-least-once delivery
is exactly-once in effect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import faust
from faust.types import TP
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor import metrics, watchdog
from monitor.events import DurableStore
from monitor.health import Progress, readiness
from monitor.kafka.security import client_options, faust_credentials
from monitor.kafka.topics import CHUNKS, DETECTIONS, DLQ, INFRINGEMENTS
from monitor.logs import throttle
from monitor.settings import KafkaSecurity
from monitor.stream import Accepted
from monitor.tracker import STARTED
from monitor.worker import Handled, Worker

log = logging.getLogger(__name__)


def create_app(
    broker_url: str, worker: Worker, store: DurableStore, web_port: int, datadir: Path, app_id: str = "castwatch-worker",
    web_host: str = "127.0.0.1", security: KafkaSecurity = KafkaSecurity(), stall_seconds: float = 300.0,
) -> faust.App:  # fmt: skip
    brokers = ";".join(f"kafka://{server.strip()}" for server in broker_url.split(","))
    datadir.mkdir(parents=True, exist_ok=True)
    progress = Progress(stall_seconds)
    app = faust.App(
        app_id,
        broker=brokers,
        broker_credentials=faust_credentials(security),
        store="memory://",
        datadir=datadir,  # faust's scratch files (all our state is in Kafka and PostgreSQL)
        web_host=web_host,
        web_bind=web_host,  # faust binds web_bind (default 0.0.0.0); web_host only names the URL
        web_port=web_port,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,  # a killed worker's partitions move on within ~10 s
        broker_heartbeat_interval=3.0,
        topic_disable_leader=True,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    chunks = app.topic(CHUNKS, **raw)
    topics = {name: app.topic(name, **raw) for name in (DLQ, DETECTIONS, INFRINGEMENTS)}

    async def durable_send(topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes] | None = None) -> None:
        pending = await topics[topic].send(key=key, value=value, headers=headers)
        await pending  # the broker has it (acks=all) before the offset can be committed

    storing = 0  # agents writing to PostgreSQL right now (an outage keeps them there on purpose)

    @app.agent(chunks, concurrency=1)
    async def process(stream: faust.StreamT) -> None:
        nonlocal storing
        async for event in stream.events():
            started = time.perf_counter()
            handled = await asyncio.to_thread(worker.handle, event.key, event.value)
            metrics.CHUNK_SECONDS.observe(time.perf_counter() - started)
            record(handled)
            progress.advanced()
            if handled.dlq_reason is not None:
                reason = {"reason": handled.dlq_reason.encode(), "error": (handled.dlq_message or "").encode()}
                await durable_send(DLQ, event.key, event.value, reason)
                continue
            if handled.outgoing or handled.state is not None:
                state = (handled.stream, handled.state) if handled.state is not None and handled.stream else None
                storing += 1
                try:
                    await asyncio.to_thread(store.write, handled.outgoing, state)
                finally:
                    storing -= 1
                for outgoing in handled.outgoing:
                    for topic, key, value in outgoing.messages():
                        await durable_send(topic, key, value)

    @app.page("/metrics")
    async def metrics_page(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        metrics.STORE_FAILURES.set(store.failures)
        # aiohttp refuses a charset inside content_type, so the exposition format's type goes in as a header
        return view.bytes(generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/livez")
    async def livez(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        check = progress.liveness()
        return view.text(check.reason + "\n", status=check.status)

    @app.page("/readyz")
    async def readyz(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        owned = [tp for tp in app.consumer.assignment() if tp.topic == CHUNKS]
        check = readiness(app.state == "running", len(owned), app.rebalancing)
        return view.text(check.reason + "\n", status=check.status)

    @app.timer(interval=5.0)
    async def measure_lag() -> None:
        lags = {}
        for tp in app.consumer.assignment():
            if tp.topic == CHUNKS:
                position = await app.consumer.position(tp)
                if position is not None:
                    lags[tp.partition] = max(0, app.consumer.highwater(tp) - position)
        metrics.lag_measured(lags)
        progress.measured(sum(lags.values()), store.failures)

    stall = watchdog.Stall()
    watched: list[TP] = []

    @app.timer(interval=watchdog.PROBE_EVERY_S)
    async def watch_consumer() -> None:
        nonlocal watched
        # A hung consumer can drop its assignment while messages pile up on
        # the partitions it held: keep watching those (if another worker took
        # them over, its commits are the progress that keeps this one quiet).
        mine = watched = [tp for tp in app.consumer.assignment() if tp.topic == CHUNKS] or watched
        committed: dict[int, int] = {}
        ends: dict[int, int] = {}
        if mine:
            try:
                committed, ends = await watchdog.probe(broker_url, app_id, mine, client_options(security))
            except (KafkaError, OSError, TimeoutError) as e:
                log.info("watchdog: cannot read offsets (%s); the broker may be restarting", e)
                return
        stalled = stall.observe(time.monotonic(), committed, ends, storing > 0)
        if stalled is not None:
            waiting = sum(end - committed.get(partition, 0) for partition, end in ends.items())
            log.error(
                "watchdog: the consumer made no progress for %.0f s with %d messages waiting; restarting the worker"
                " process (its state is in PostgreSQL and Kafka)", stalled, waiting,
            )  # fmt: skip
            os.execv(sys.executable, sys.orig_argv)

    return app


class FaustWorker(faust.Worker):
    """faust's worker whose log holds back the repeats of a broker outage (``monitor.logs``)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        throttle(logger)


def record(handled: Handled) -> None:
    """Count what one message did."""
    if handled.dlq_reason is not None:
        metrics.DLQ.labels(handled.dlq_reason).inc()
        return
    assert handled.stream is not None
    if handled.accepted is Accepted.DUPLICATE:
        metrics.DUPLICATES.labels(handled.stream).inc()
        return
    if handled.accepted is Accepted.NEW_SEGMENT:
        metrics.SEGMENTS.labels(handled.stream).inc()
    metrics.saw_audio(handled.stream, handled.seconds)
    for outgoing in handled.outgoing:
        play = outgoing.event.play
        metrics.PLAYS.labels("started" if outgoing.event.kind == STARTED else "ended").inc()
        if outgoing.event.kind == STARTED:
            metrics.DETECTION_LATENCY.observe(handled.stream_time - play.started_at)
            if not outgoing.decision.licensed:
                metrics.INFRINGEMENTS.inc()

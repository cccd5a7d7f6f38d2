"""``castwatch worker`` end to end: a real broker, a real database, a worker process, a broadcast."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from fingerprint.params import SAMPLE_RATE
from fingerprint.synth import music
from monitor.chunks import encode
from monitor.kafka.topics import ensure_topics
from monitor.rights import catalog
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.licences import Stream, add_stream
from monitor.rights.localdb import free_port
from logged import LoggedProcess

T0_NS = 1_780_000_000 * 10**9


async def publish(url: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait("audio.chunks.v1", value, key=key)
    finally:
        await producer.stop()


async def read(url: str, topic: str, minimum: int, timeout_s: float, stream: str | tuple[str, ...]) -> list[tuple[bytes, bytes, dict]]:
    """Messages of ``stream`` (or streams; the broker is shared by the session's tests) until ``minimum`` came or time is up."""
    keys = {s.encode() for s in ((stream,) if isinstance(stream, str) else stream)}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[bytes, bytes, dict]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < minimum and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            out += [(m.key, m.value, dict(m.headers)) for msgs in batches.values() for m in msgs if m.key in keys]
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def stream() -> str:
    """A stream id no other test uses: the session's tests share the broker and its chunk topic."""
    return f"fm-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def catalogue(db_url: str, tmp_path: Path, stream: str) -> dict[str, int]:
    ids = {}
    with psycopg.connect(db_url) as conn:
        for seed in (21, 22):
            path = tmp_path / f"rec-{seed}.wav"
            sf.write(path, music(60.0, seed), SAMPLE_RATE)
            ((_, track_id),) = catalog.add(conn, [path], {}, TrackMeta(title=f"Song {seed}", owners=(Owner("Acme"),))).added
            ids[f"rec-{seed}"] = track_id
        add_stream(conn, Stream(stream, "FM One", "FM One Ltd", "FR"))
    return ids


def start_worker(db_url: str, broker: str, group: str, web_port: int | None = None) -> LoggedProcess:
    env = dict(os.environ, CASTWATCH_DATABASE_URL=db_url, CASTWATCH_BROKER_URL=broker)
    return LoggedProcess([sys.executable, "-m", "monitor", "worker", "--web-port", str(web_port or free_port()), "--group", group], env)


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return response.read().decode()


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {"name{labels}": value}."""
    text = scrape_text(port)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def stop_worker(worker: LoggedProcess) -> str:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    return worker.output()


def broadcast_messages(stream: str) -> list[tuple[bytes, bytes]]:
    """8 s of noise, 40 s of recording 21 from 5 s, 30 s of noise; 2 s chunks."""
    rng = np.random.default_rng(3)
    x = np.concatenate((0.05 * rng.standard_normal(8 * SAMPLE_RATE), music(60.0, 21)[5 * SAMPLE_RATE : 45 * SAMPLE_RATE],
                        0.05 * rng.standard_normal(30 * SAMPLE_RATE))).astype(np.float32)  # fmt: skip
    size = 2 * SAMPLE_RATE
    return [encode(stream, i, T0_NS + i * 2 * 10**9, SAMPLE_RATE, x[i * size : (i + 1) * size]) for i in range(x.shape[0] // size)]


def stored_plays(db_url: str, stream: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT d.event_id::text, d.state, extract(epoch FROM d.started_at), extract(epoch FROM d.ended_at), i.status"
            " FROM detections d LEFT JOIN infringements i ON i.detection_id = d.event_id WHERE d.stream_id = %s",
            (stream,),
        ).fetchall()


def test_worker_turns_a_broadcast_into_plays(kafka_broker, db_url: str, catalogue: dict[str, int], stream: str) -> None:
    url = kafka_broker.url
    asyncio.run(ensure_topics(url))
    messages = broadcast_messages(stream)
    messages.insert(5, (stream.encode(), b"garbage"))
    port = free_port()
    worker = start_worker(db_url, url, f"test-worker-{free_port()}", port)
    try:
        asyncio.run(publish(url, messages))
        detections = asyncio.run(read(url, "detections.v1", 2, timeout_s=90, stream=stream))
        dead = asyncio.run(read(url, "audio.chunks.dlq.v1", 1, timeout_s=10, stream=stream))
        deadline = time.monotonic() + 30
        while (seen := scrape(port)).get('castwatch_chunks_total{stream="' + stream + '"}') != len(messages) - 1:
            assert time.monotonic() < deadline, "the worker did not process every chunk"
            time.sleep(0.5)
        exposition = scrape_text(port)
    finally:
        output = stop_worker(worker)
    events = [json.loads(v) for _, v, _ in detections]
    assert [e["event"] for e in events] == ["play.started", "play.ended"], output[-3000:]
    ended = events[-1]
    assert ended["track_id"] == catalogue["rec-21"] and ended["stream_id"] == stream and ended["title"] == "Song 21"
    assert ended["licensed"] is False and "FM One Ltd" in ended["licence_reason"]
    assert ended["event_id"] == events[0]["event_id"]
    assert ended["ref_start_s"] == pytest.approx(5.0, abs=2.0)
    assert any(h.get("reason") == b"truncated" for _, _, h in dead)
    assert seen['castwatch_chunks_total{stream="' + stream + '"}'] == len(messages) - 1
    assert seen['castwatch_audio_seconds_total{stream="' + stream + '"}'] == pytest.approx(2.0 * (len(messages) - 1))
    # The rest are not per stream, and the worker (a new group) also read what earlier tests left on the topic.
    assert seen['castwatch_dlq_messages_total{reason="truncated"}'] >= 1
    assert seen['castwatch_play_events_total{event="started"}'] >= 1 and seen["castwatch_infringements_total"] >= 1
    assert seen["castwatch_detection_latency_seconds_count"] >= 1
    assert seen['castwatch_detection_latency_seconds_bucket{le="20.0"}'] == seen["castwatch_detection_latency_seconds_count"]
    assert seen["castwatch_chunk_processing_seconds_count"] >= len(messages)
    assert seen["castwatch_index_recordings"] == 2 and seen["castwatch_index_postings"] > 0
    assert 0 <= seen['castwatch_stream_seconds_since_audio{stream="' + stream + '"}'] < 60
    lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr
    ((event_id, state, started, ended_at, status),) = stored_plays(db_url, stream)
    assert event_id == ended["event_id"] and state == "ended" and status == "open"
    assert float(started) - T0_NS / 1e9 == pytest.approx(8.0, abs=2.0)
    assert float(ended_at) - T0_NS / 1e9 == pytest.approx(48.0, abs=2.0)


def test_kill_9_mid_play_gives_the_play_exactly_once(kafka_broker, db_url: str, catalogue: dict[str, int], stream: str) -> None:
    url = kafka_broker.url
    asyncio.run(ensure_topics(url))
    messages = broadcast_messages(stream)
    group = f"test-worker-{free_port()}"
    worker = start_worker(db_url, url, group)
    try:
        asyncio.run(publish(url, messages[:14]))  # 28 s: the recording has been playing for 20 s
        started = asyncio.run(read(url, "detections.v1", 1, timeout_s=90, stream=stream))
        assert [json.loads(v)["event"] for _, v, _ in started] == ["play.started"]
    finally:
        worker.kill()  # SIGKILL: no shutdown, no final commit
        worker.wait()
    worker = start_worker(db_url, url, group)
    try:
        asyncio.run(publish(url, messages[14:]))
        deadline = time.monotonic() + 120
        detections = asyncio.run(read(url, "detections.v1", 2, timeout_s=120, stream=stream))
        while time.monotonic() < deadline and json.loads(detections[-1][1])["event"] != "play.ended":
            detections = asyncio.run(read(url, "detections.v1", len(detections) + 1, timeout_s=5, stream=stream))
    finally:
        output = stop_worker(worker)
    events = [json.loads(v) for _, v, _ in detections]
    assert {e["event_id"] for e in events} == {events[0]["event_id"]}, output[-3000:]
    assert events[-1]["event"] == "play.ended"
    ((event_id, state, started_at, ended_at, status),) = stored_plays(db_url, stream)
    assert event_id == events[0]["event_id"] and state == "ended" and status == "open"
    assert float(started_at) - T0_NS / 1e9 == pytest.approx(8.0, abs=2.0)
    assert float(ended_at) - T0_NS / 1e9 == pytest.approx(48.0, abs=2.0)


def wait_for_event(url: str, stream: str, event: str, timeout_s: float) -> list[dict]:
    """Every detection of ``stream`` once one of them is ``event`` (fails after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    found: list[tuple[bytes, bytes, dict]] = []
    while time.monotonic() < deadline:
        found = asyncio.run(read(url, "detections.v1", len(found) + 1, timeout_s=3, stream=stream))
        events = [json.loads(v) for _, v, _ in found]
        if any(e["event"] == event for e in events):
            return events
    raise AssertionError(f"no {event} for {stream} within {timeout_s} s: {found}")


def test_database_outage_stalls_the_worker_and_loses_nothing(kafka_broker, pg_server, db_url: str, catalogue: dict[str, int], stream: str) -> None:
    url = kafka_broker.url
    asyncio.run(ensure_topics(url))
    messages = broadcast_messages(stream)
    worker = start_worker(db_url, url, f"test-worker-{free_port()}")
    try:
        asyncio.run(publish(url, messages[:14]))
        wait_for_event(url, stream, "play.started", 90)
        pg_server.server.stop()
        try:
            asyncio.run(publish(url, messages[14:]))
            time.sleep(8)  # the play ends during the outage: its event cannot be stored, so it is not sent
            assert "play.ended" not in [json.loads(v)["event"] for _, v, _ in asyncio.run(read(url, "detections.v1", 99, 2, stream))]
            assert worker.poll() is None
        finally:
            pg_server.server.start()
        events = wait_for_event(url, stream, "play.ended", 90)
    finally:
        output = stop_worker(worker)
    assert {e["event_id"] for e in events} == {events[0]["event_id"]}, output[-3000:]
    ((_, state, _, ended_at, _),) = stored_plays(db_url, stream)
    assert state == "ended" and float(ended_at) - T0_NS / 1e9 == pytest.approx(48.0, abs=2.0)
    assert "failed, retrying" in output


def test_a_thousand_malformed_messages_go_to_the_dead_letter_topic(kafka_broker, db_url: str, catalogue: dict[str, int], stream: str) -> None:
    url = kafka_broker.url
    asyncio.run(ensure_topics(url))
    rng = np.random.default_rng(9)
    good_key, good = encode("fm-bad", 0, T0_NS, SAMPLE_RATE, np.zeros(SAMPLE_RATE, np.int16))
    kinds = [
        lambda i: (b"fm-bad", rng.bytes(int(rng.integers(0, 64)))),  # noise
        lambda i: (b"fm-bad", b"XXXX" + good[4:]),  # bad magic
        lambda i: (b"fm-bad", good[:-1]),  # wrong length
        lambda i: (b"fm bad", good),  # bad key
        lambda i: (b"fm-bad", good[:12] + (2**40).to_bytes(8, "little") + good[20:]),  # sequence jump
    ]
    bad = [kinds[i % len(kinds)](i) for i in range(1000)]
    port = free_port()
    worker = start_worker(db_url, url, f"test-worker-{free_port()}", port)
    try:
        asyncio.run(publish(url, [(good_key, good)] + bad + [encode("fm-bad", 1, T0_NS + 10**9, SAMPLE_RATE, np.zeros(SAMPLE_RATE, np.int16))]))
        dead = asyncio.run(read(url, "audio.chunks.dlq.v1", 1000, timeout_s=120, stream=("fm-bad", "fm bad")))
        deadline = time.monotonic() + 30
        while scrape(port).get('castwatch_chunks_total{stream="fm-bad"}') != 2:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        seen = scrape(port)
    finally:
        output = stop_worker(worker)
    reasons = [h.get("reason", b"").decode() for _, _, h in dead]
    assert len(reasons) >= 1000, output[-2000:]
    assert {"bad_magic", "bad_length", "bad_key", "bad_sequence"} <= set(reasons)
    assert all(h.get("error") for _, _, h in dead)
    assert sum(v for k, v in seen.items() if k.startswith("castwatch_dlq_messages_total")) >= 1000


def test_broker_restart_mid_play_loses_nothing(kafka_broker, db_url: str, catalogue: dict[str, int], stream: str, tmp_path: Path) -> None:
    """The play goes on across a broker restart; a consumer that hangs after it is restarted by the watchdog."""
    url = kafka_broker.url
    asyncio.run(ensure_topics(url))
    messages = broadcast_messages(stream)
    worker = start_worker(db_url, url, f"test-worker-{free_port()}")
    failure: AssertionError | None = None
    try:
        asyncio.run(publish(url, messages[:14]))
        wait_for_event(url, stream, "play.started", 90)
        kafka_broker.restart()
        asyncio.run(publish(url, messages[14:]))
        events = wait_for_event(url, stream, "play.ended", 150)
        assert worker.poll() is None, "the worker died"
    except AssertionError as e:
        failure = e
    finally:
        output = stop_worker(worker)
    if failure is not None:
        log = tmp_path / "worker.log"
        log.write_text(output)
        raise AssertionError(f"{failure}\n--- worker output (all of it in {log}) ---\n{output[-4000:]}") from failure
    assert {e["event_id"] for e in events} == {events[0]["event_id"]}, output[-3000:]
    ((_, state, started_at, ended_at, _),) = stored_plays(db_url, stream)
    assert state == "ended"
    assert float(started_at) - T0_NS / 1e9 == pytest.approx(8.0, abs=2.0)
    assert float(ended_at) - T0_NS / 1e9 == pytest.approx(48.0, abs=2.0)

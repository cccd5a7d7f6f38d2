"""Capture (monitor/ingest.py): chunking and pacing without Kafka; files and URLs against a real broker."""

from __future__ import annotations

import asyncio
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fingerprint.audio import decode
from fingerprint.synth import music
from monitor.chunks import Chunk
from monitor.cli import main
from monitor.ingest import (
    BACKOFF_MIN_S,
    Chunker,
    IngestError,
    Pacer,
    PlannedChunk,
    chunk_samples,
    ingest,
    plan_chunks,
)
from monitor.kafka.local import LocalBroker
from monitor.rights.localdb import free_port

from broker import fresh_topic
from chunk_topic import consume_chunks

RATE = 16000


def pcm16(x: np.ndarray) -> np.ndarray:
    """What the wire format makes of float samples."""
    return np.clip(np.rint(x.astype(np.float64) * 32767), -32768, 32767).astype(np.int16)


# --- pure: chunking and pacing ---------------------------------------------


@pytest.mark.parametrize("blocks", [[10_000], [1, 2999, 3000, 4000], [7] * 1428 + [4], [3000, 0, 7000]])
def test_chunker_is_independent_of_how_the_audio_arrives(blocks: list[int]) -> None:
    samples = np.arange(sum(blocks), dtype=np.int16)
    chunker = Chunker(8000, 3000, start_ns=1_000)
    chunks: list[PlannedChunk] = []
    at = 0
    for size in blocks:
        chunks += chunker.push(samples[at : at + size])
        at += size
    chunks += chunker.flush()
    assert [c.sequence for c in chunks] == list(range(4))
    assert [c.samples.shape[0] for c in chunks] == [3000, 3000, 3000, samples.shape[0] - 9000]
    assert [c.captured_ns for c in chunks] == [1_000 + k * 375_000_000 for k in range(4)]  # 3000 / 8000 s apart
    assert [c.due_s for c in chunks] == [0.375, 0.75, 1.125, samples.shape[0] / 8000]
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), samples)
    assert chunker.end_ns == 1_000 + samples.shape[0] * 125_000
    assert chunker.flush() == []
    assert [c.captured_ns for c in plan_chunks(samples, 8000, 3000, 1_000)] == [c.captured_ns for c in chunks]


def test_timestamps_do_not_drift_with_chunks_that_do_not_divide_a_second() -> None:
    chunks = plan_chunks(np.zeros(44100 * 60, np.int16), 44100, 30_000, start_ns=0)  # 0.680272... s each
    assert chunks[-1].captured_ns == (len(chunks) - 1) * 30_000 * 10**9 // 44100
    assert chunks[-1].captured_ns + chunks[-1].samples.shape[0] * 10**9 // 44100 in (60 * 10**9, 60 * 10**9 - 1)


def test_pacer_holds_each_chunk_until_its_audio_has_played() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def scenario(fast: bool) -> None:
        pacer = Pacer(fast, sleep, clock=lambda: now[0])
        for chunk in plan_chunks(np.zeros(5 * RATE, np.int16), RATE, 2 * RATE, 0):
            now[0] += 0.1  # encoding and sending take a little time
            await pacer.wait(chunk)

    asyncio.run(scenario(fast=False))
    assert slept == pytest.approx([1.9, 1.9, 0.9])  # due at 2, 4, 5 s after the start
    slept.clear()
    asyncio.run(scenario(fast=True))
    assert slept == []
    late = Pacer(False, sleep, clock=lambda: now[0])
    now[0] += 10.0
    assert late.delay(PlannedChunk(0, 0, np.zeros(1, np.int16), 2.0)) == 0.0  # a late chunk goes at once


def test_audio_arriving_late_shows_a_gap_in_the_capture() -> None:
    now = [0.0]
    pacer = Pacer(False, clock=lambda: now[0])
    now[0] = 4.0
    assert pacer.lag_s(4.0) == 0.0  # live audio keeps pace with the clock
    now[0] = 12.0
    assert pacer.lag_s(4.5) == 7.5  # 0.5 s more audio after 8 s: ffmpeg bridged a drop


def test_chunk_sizes_the_format_or_the_broker_refuse() -> None:
    assert chunk_samples(16000, 2.0) == 32000
    with pytest.raises(IngestError, match="--rate 12345"):
        chunk_samples(12345, 2.0)
    with pytest.raises(IngestError, match="--chunk-seconds 0"):
        chunk_samples(16000, 0)
    with pytest.raises(IngestError, match="at most 10 s"):
        chunk_samples(48000, 20)


@pytest.mark.parametrize(
    "source, message",
    [("/no/such.wav", "no such file"), (".", "is a directory"), ("htp://radio.example/live", "not a URL")],
)
def test_unusable_sources_are_refused_before_any_connection(source: str, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        asyncio.run(ingest(source, "radio-1", "127.0.0.1:1"))


def test_bad_stream_id(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="--stream 'radio 1'"):
        asyncio.run(ingest(str(tmp_path), "radio 1", "127.0.0.1:1"))


# --- against the real broker ------------------------------------------------


def _check_segment(chunks: list[Chunk], expected: np.ndarray, chunk_size: int) -> None:
    """Consecutive sequences from 0, timestamps exactly chunk-spaced, audio equal to ``expected``."""
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert all(c.rate == RATE for c in chunks)
    step = chunk_size * 10**9 // RATE
    assert [c.captured_ns - chunks[0].captured_ns for c in chunks] == [k * step for k in range(len(chunks))]
    received = np.concatenate([c.samples for c in chunks]).astype(np.int32)
    assert received.shape == expected.shape
    assert np.abs(received - expected).max() <= 1  # float rounding of the resampler, at most one step


def test_ingest_fast_publishes_a_file_as_consecutive_chunks(
    kafka_broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "take.wav"
    sf.write(path, np.stack([music(7.0, 11), music(7.0, 12)], axis=1), 8000)  # stereo 8 kHz: mixed and resampled
    topic = asyncio.run(fresh_topic(kafka_broker.url, "ingest"))
    monkeypatch.setenv("CASTWATCH_BROKER_URL", kafka_broker.url)
    assert main(["ingest", str(path), "--stream", "radio-1", "--fast", "--topic", topic]) == 0
    assert "14.0 s of audio sent" not in capsys.readouterr().err  # 7 s of audio, not 14
    chunks = asyncio.run(consume_chunks(kafka_broker.url, topic, lambda c: len(c) >= 4))
    assert [c.samples.shape[0] for c in chunks] == [32000, 32000, 32000, 16000]
    assert {c.stream for c in chunks} == {"radio-1"}
    _check_segment(chunks, pcm16(decode(path, RATE)).astype(np.int32), 32000)


def test_ingest_in_real_time_takes_as_long_as_the_audio(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, music(1.5, 13, RATE), RATE)
    messages: list[str] = []

    async def scenario() -> None:
        topic = await fresh_topic(kafka_broker.url, "ingest-rt")
        summary = await ingest(str(path), "radio-2", kafka_broker.url, topic=topic, chunk_seconds=0.5, report=messages.append)
        assert summary.chunks == 3 and summary.audio_seconds == 1.5 and not summary.stopped
        assert 1.4 <= summary.wall_seconds < 3.0

    asyncio.run(scenario())
    assert messages[-1].endswith("1.5 s of audio sent (1.0x real time) - done")


def test_stop_flushes_what_was_captured(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, music(20.0, 14, RATE), RATE)

    async def scenario() -> list[Chunk]:
        topic = await fresh_topic(kafka_broker.url, "ingest-stop")
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.2, stop.set)
        summary = await ingest(str(path), "radio-3", kafka_broker.url, topic=topic, chunk_seconds=0.5, stop=stop)
        assert summary.stopped and summary.chunks >= 2
        return await consume_chunks(kafka_broker.url, topic, lambda c: len(c) >= summary.chunks)

    chunks = asyncio.run(scenario())
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert len(chunks) < 40  # did not run to the end of the 20 s file


def test_unreachable_broker_names_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, music(1.0, 15, RATE), RATE)
    url = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CASTWATCH_BROKER_URL", url)
    assert main(["ingest", str(path), "--stream", "radio-4", "--fast"]) == 1
    assert f"cannot reach the Kafka broker at {url}" in capsys.readouterr().err


class _DroppingServer:
    """An HTTP server for one WAV that can end a listener's stream early and go away (off the air)."""

    def __init__(self, body: bytes, port: int) -> None:
        self.body, self.port = body, port
        self.drop_after: int | None = None
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self, drop_after: int | None = None) -> None:
        self.drop_after = drop_after
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner.body[: owner.drop_after]
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                # With a length, ffmpeg ends at the end of the body; without one (a real Icecast
                # stream), it would first try to resume by itself for up to 30 s.
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if owner.drop_after is not None:  # the station goes off the air
                    threading.Thread(target=owner.stop).start()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()


def test_url_source_reconnects_with_backoff_and_restarts_the_sequence(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    sf.write(path, music(8.0, 16, RATE), RATE, subtype="PCM_16")
    audio = sf.read(path, dtype="int16")[0].astype(np.int32)
    body = path.read_bytes()
    server = _DroppingServer(body, free_port())
    messages: list[str] = []

    def report(message: str) -> None:
        messages.append(message)
        if len(messages) == 2:  # dropped, then one refused reconnection: the station is back
            server.start()

    async def scenario() -> list[Chunk]:
        topic = await fresh_topic(kafka_broker.url, "ingest-url")
        stop = asyncio.Event()
        url = f"http://127.0.0.1:{server.port}/live.wav"
        capture = asyncio.create_task(
            ingest(url, "radio-5", kafka_broker.url, topic=topic, fast=True, stop=stop, report=report)
        )
        chunks = await consume_chunks(kafka_broker.url, topic, lambda c: any(x.sequence == 3 for x in c))
        stop.set()
        summary = await capture
        assert summary.stopped and summary.segments >= 2
        return chunks

    server.start(drop_after=44 + 2 * 3 * RATE + 1000)  # 3 s of audio and a bit, then off the air
    try:
        chunks = asyncio.run(scenario())
    finally:
        server.stop()
    restart = next(i for i, c in enumerate(chunks) if i and c.sequence == 0)
    first, second = chunks[:restart], chunks[restart : restart + 4]
    _check_segment(first, audio[: 3 * RATE + 500], 32000)
    _check_segment(second, audio, 32000)
    gap_s = (second[0].captured_ns - first[-1].end_ns) / 1e9
    assert gap_s >= 0.0  # capture time never goes back across a reconnection
    assert "dropped after 3.0 s" in messages[0] and f"reconnecting in {BACKOFF_MIN_S:.1f} s" in messages[0]
    assert "cannot connect" in messages[1] and "reconnecting in 1.0 s" in messages[1]

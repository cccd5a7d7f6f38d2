"""Capture producers: an audio file or a live URL, as audio chunks on Kafka (``audio.chunks.v1``).

The worker reconstructs stream time from each chunk's capture timestamp and
sequence number, so this module's job is to make those two trustworthy:

- sequence numbers are consecutive from 0 within a *capture segment* (one run
  over a file, one ffmpeg connection to a URL);
- ``captured_ns`` of a chunk is the segment's start time plus the samples
  before it divided by the rate, never the time it happened to be sent, so
  send jitter does not stretch or squeeze stream time;
- when a URL source drops, ffmpeg is restarted with exponential backoff and a
  new segment begins: sequence 0 again, ``captured_ns`` at the new capture time
  (never earlier than the end of the previous segment), which the worker reads
  as a capture restart.

Chunks leave at real-time pace (a chunk once its last sample would have
played) unless ``fast``; the producer is idempotent with ``acks="all"`` and is
flushed before exit, also on SIGINT/SIGTERM, so nothing captured is lost.

The pure parts (:class:`Chunker`, :class:`Pacer`) do no I/O and are tested
without Kafka.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from fingerprint.audio import ffmpeg_path, is_url, to_mono
from fingerprint.resample import StreamingResampler
from monitor.chunks import MAX_CHUNK_SECONDS, SAMPLE_RATES, STREAM_ID, encode
from monitor.kafka.security import client_options
from monitor.settings import KafkaSecurity

TOPIC = "audio.chunks.v1"
DEFAULT_RATE = 16000
DEFAULT_CHUNK_SECONDS = 2.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
# A connection that delivered this much audio was healthy: the next drop starts the backoff afresh.
STABLE_AUDIO_S = 10.0
# Live audio this much later than its timeline followed a gap: timestamps restart from the clock.
MAX_CAPTURE_LAG_S = 5.0
MAX_MESSAGE_BYTES = 1_000_000  # Kafka's default message.max.bytes is about 1 MB
LINGER_MS = 5
PROGRESS_EVERY_S = 5.0
FILE_BLOCK_FRAMES = 8192  # small: on a stop, what was read ahead goes out at once
PIPE_READ_BYTES = 1 << 16
STDERR_LINES = 5
EXIT_WAIT_S = 5.0  # for ffmpeg to exit once its output ended

Report = Callable[[str], None]
T = TypeVar("T")


class IngestError(RuntimeError):
    """A source or the broker cannot be used; the message names it and says what to do."""


def report_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chunk_samples(rate: int, chunk_seconds: float) -> int:
    """Samples per chunk; an IngestError for a rate or length the wire format or the broker refuses."""
    if rate not in SAMPLE_RATES:
        raise IngestError(f"--rate {rate}: expected one of {sorted(SAMPLE_RATES)} Hz")
    n = round(chunk_seconds * rate)
    if not 0 < chunk_seconds <= MAX_CHUNK_SECONDS or n < 1:
        raise IngestError(f"--chunk-seconds {chunk_seconds}: expected more than 0 and at most {MAX_CHUNK_SECONDS:.0f}")
    if 2 * n + 64 > MAX_MESSAGE_BYTES:
        raise IngestError(
            f"--chunk-seconds {chunk_seconds} at {rate} Hz makes {2 * n} bytes per chunk, more than Kafka's"
            f" default {MAX_MESSAGE_BYTES} bytes per message: choose at most {MAX_MESSAGE_BYTES // 2 // rate} s"
        )
    return n


@dataclass(frozen=True)
class PlannedChunk:
    """One chunk of a capture segment, ready to encode, and when it may leave."""

    sequence: int
    captured_ns: int  # capture time of the first sample
    samples: np.ndarray
    due_s: float  # audio seconds from the segment's start to this chunk's end: when it has played


class Chunker:
    """Cuts one capture segment's audio, arriving in blocks of any size, into chunks of ``size`` samples.

    Timestamps come from the sample count, so they are exact whatever the
    blocks and however late they arrive. ``flush`` emits the last, shorter chunk.
    """

    def __init__(self, rate: int, size: int, start_ns: int) -> None:
        self.rate, self.size, self.start_ns = rate, size, start_ns
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._emitted_samples = 0
        self._sequence = 0

    @property
    def samples_seen(self) -> int:
        return self._emitted_samples + self._pending_samples

    @property
    def end_ns(self) -> int:
        """Capture time just after the last sample pushed."""
        return self._time_ns(self.samples_seen)

    def push(self, samples: np.ndarray) -> list[PlannedChunk]:
        """The chunks that ``samples`` completes."""
        if samples.shape[0]:
            self._pending.append(samples)
            self._pending_samples += samples.shape[0]
        out: list[PlannedChunk] = []
        if self._pending_samples < self.size:
            return out
        joined = np.concatenate(self._pending)
        whole = self._pending_samples - self._pending_samples % self.size
        for start in range(0, whole, self.size):
            out.append(self._chunk(joined[start : start + self.size]))
        self._pending = [joined[whole:]] if whole < joined.shape[0] else []
        self._pending_samples -= whole
        return out

    def flush(self) -> list[PlannedChunk]:
        """The remaining samples as one last (shorter) chunk, if there are any."""
        if not self._pending_samples:
            return []
        chunk = self._chunk(np.concatenate(self._pending))
        self._pending, self._pending_samples = [], 0
        return [chunk]

    def _time_ns(self, samples: int) -> int:
        return self.start_ns + samples * 1_000_000_000 // self.rate

    def _chunk(self, samples: np.ndarray) -> PlannedChunk:
        start = self._emitted_samples
        self._emitted_samples += samples.shape[0]
        chunk = PlannedChunk(self._sequence, self._time_ns(start), samples, self._emitted_samples / self.rate)
        self._sequence += 1
        return chunk


def plan_chunks(samples: np.ndarray, rate: int, size: int, start_ns: int) -> list[PlannedChunk]:
    """All the chunks of one whole segment (the simulator's case: its audio exists up front)."""
    chunker = Chunker(rate, size, start_ns)
    return chunker.push(samples) + chunker.flush()


class Pacer:
    """Holds each chunk back until its audio would have played since the segment began (or not, if ``fast``).

    The clock and the sleep are injected so that pacing is tested without waiting.
    """

    def __init__(
        self,
        fast: bool,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fast, self._sleep, self._clock = fast, sleep, clock
        self.origin = clock()

    def restart(self) -> None:
        """A new segment starts now."""
        self.origin = self._clock()

    def delay(self, chunk: PlannedChunk) -> float:
        """Seconds to wait before sending ``chunk`` (0 when it is due or late)."""
        return 0.0 if self.fast else max(0.0, self.origin + chunk.due_s - self._clock())

    def lag_s(self, audio_s: float) -> float:
        """Seconds by which ``audio_s`` of audio from the segment's start arrives later than real time."""
        return self._clock() - self.origin - audio_s

    async def wait(self, chunk: PlannedChunk) -> None:
        delay = self.delay(chunk)
        if delay > 0:
            await self._sleep(delay)


def stoppable_sleep(stop: asyncio.Event) -> Callable[[float], Awaitable[None]]:
    """A sleep that ends early when ``stop`` is set (so a shutdown sends what is held back at once)."""

    async def sleep(seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass

    return sleep


class ChunkPublisher:
    """The one Kafka producer of a capture process: idempotent, ``acks="all"``, flushed on exit.

    ``send`` only enqueues (aiokafka batches and retries); a failed delivery
    is raised at the next send or at exit, so a broker that went away stops
    the capture instead of dropping audio silently.
    """

    def __init__(self, broker_url: str, topic: str, security: KafkaSecurity = KafkaSecurity()) -> None:
        self.broker_url, self.topic = broker_url, topic
        self.sent = 0
        self.samples_sent = 0
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=broker_url,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            max_batch_size=MAX_MESSAGE_BYTES,
            max_request_size=MAX_MESSAGE_BYTES + (1 << 16),
            **client_options(security),
        )

    async def __aenter__(self) -> ChunkPublisher:
        try:
            await self._producer.start()
        except KafkaError as e:
            await self._producer.stop()
            raise IngestError(
                f"cannot reach the Kafka broker at {self.broker_url}: {e}; start the local one with"
                " `castwatch kafka up`, or set CASTWATCH_BROKER_URL to a running broker"
            ) from e
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._producer.stop()  # delivers everything enqueued first
        self._check(wait_all=True)

    async def send(self, stream: str, chunk: PlannedChunk, rate: int) -> None:
        key, value = encode(stream, chunk.sequence, chunk.captured_ns, rate, chunk.samples)
        try:
            self._pending.append(await self._producer.send(self.topic, value, key=key))
        except KafkaError as e:
            raise IngestError(f"sending to topic {self.topic} at {self.broker_url} failed: {e}") from e
        self.sent += 1
        self.samples_sent += chunk.samples.shape[0]
        self._check(wait_all=False)

    def _check(self, wait_all: bool) -> None:
        while self._pending and (wait_all or self._pending[0].done()):
            future = self._pending.popleft()
            error = future.exception() if future.done() else None
            if error is not None:
                raise IngestError(f"the broker at {self.broker_url} did not take a chunk: {error}") from error


@dataclass
class Segment:
    """One capture segment being published: its chunker and pacing."""

    stream: str
    rate: int
    size: int
    publisher: ChunkPublisher
    pacer: Pacer
    chunker: Chunker | None = None

    def lag_s(self, arriving: int) -> float:
        """How much later than its capture timeline ``arriving`` more samples come (0 outside a segment).

        Live audio arrives in real time; audio that comes much later followed a
        gap the decoder bridged (ffmpeg resumes a dropped HTTP stream by itself),
        and timestamps counted from the sample count would hide that gap.
        """
        if self.chunker is None:
            return 0.0
        return self.pacer.lag_s((self.chunker.samples_seen + arriving) / self.rate)

    def begin(self, start_ns: int) -> None:
        self.chunker = Chunker(self.rate, self.size, start_ns)
        self.pacer.restart()

    async def publish(self, samples: np.ndarray) -> None:
        assert self.chunker is not None, "begin() first"
        await self._send(self.chunker.push(samples))

    async def finish(self) -> None:
        if self.chunker is not None:
            await self._send(self.chunker.flush())

    async def _send(self, chunks: list[PlannedChunk]) -> None:
        for chunk in chunks:
            await self.pacer.wait(chunk)
            await self.publisher.send(self.stream, chunk, self.rate)


@dataclass(frozen=True)
class IngestSummary:
    chunks: int
    audio_seconds: float
    wall_seconds: float
    segments: int
    stopped: bool  # by a signal or the caller's stop event, before the source ended


class FfmpegCapture:
    """One ffmpeg process decoding a source to mono s16le on its stdout (one capture segment)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._output_ended = False
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def start(cls, ffmpeg: str, source: str, rate: int) -> FfmpegCapture:
        network = ["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "30"]
        command = [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            *(network if source.lower().startswith(("http://", "https://")) else []),
            "-i", source, "-vn", "-f", "s16le", "-ac", "1", "-ar", str(rate), "-",
        ]  # fmt: skip
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise IngestError(f"cannot run {ffmpeg}: {e}") from e
        return cls(process)

    async def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        async for line in self._process.stderr:
            text = line.decode(errors="replace").strip()
            if text:
                self._stderr.append(text)

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        """int16 samples as ffmpeg decodes them, until it exits."""
        assert self._process.stdout is not None
        odd = b""
        while data := await self._process.stdout.read(PIPE_READ_BYTES):
            data = odd + data
            usable = len(data) - len(data) % 2
            odd = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], "<i2").astype(np.int16)
        self._output_ended = True

    def stop(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()

    async def close(self) -> tuple[int, str]:
        """Wait for ffmpeg to end, stopping it if its output has not; its exit status and why, for messages.

        An ffmpeg whose output ended is left to exit by itself: signalling it
        would reap it behind asyncio's back (``Popen.send_signal`` polls first),
        which then reports a made-up exit status.
        """
        if not self._output_ended:
            self.stop()
        try:
            code = await asyncio.wait_for(self._process.wait(), EXIT_WAIT_S)
        except TimeoutError:
            self._process.kill()
            code = await self._process.wait()
        await self._stderr_task
        detail = "; ".join(self._stderr) or "no message"
        return code, (f"ffmpeg exit status {code}: {detail}" if code else "end of stream")


def _soundfile_blocks(path: Path, rate: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of a file soundfile reads, resampled to ``rate`` exactly as the whole file would be."""
    with sf.SoundFile(path) as f:
        resampler = StreamingResampler(f.samplerate, rate)
        for block in f.blocks(FILE_BLOCK_FRAMES, dtype="float32", always_2d=True):
            yield resampler.feed(to_mono(block))
        yield resampler.flush()


async def _file_audio(source: str, rate: int) -> AsyncIterator[np.ndarray]:
    """A file's audio in blocks: soundfile reads WAV, FLAC, OGG, MP3 in-process, ffmpeg anything else."""
    try:
        sf.info(source)
    except sf.SoundFileError as e:
        ffmpeg = ffmpeg_path()
        if ffmpeg is None:
            raise IngestError(f"{source}: cannot decode: {e} (ffmpeg, which reads more formats, is not installed)") from e
        capture = await FfmpegCapture.start(ffmpeg, source, rate)
        try:
            async for block in capture.blocks():
                yield block
        finally:
            code, why = await capture.close()
        if code:
            raise IngestError(f"{source}: cannot decode it (soundfile: {e}; {why})") from e
        return
    try:
        for block in _soundfile_blocks(Path(source), rate):
            yield block
    except sf.SoundFileError as e:
        raise IngestError(f"{source}: decoding failed part way: {e}") from e


def _check_source(source: str) -> None:
    if "://" in source and not is_url(source):
        raise IngestError(f"{source}: not a URL castwatch can capture (http, https, rtmp, rtsp, icecast, udp, srt)")
    if is_url(source):
        if ffmpeg_path() is None:
            raise IngestError(f"{source}: capturing URLs needs ffmpeg; install it (apt-get install ffmpeg)")
        return
    path = Path(source)
    if not path.is_file():
        raise IngestError(f"{source}: {'is a directory, expected an audio file' if path.is_dir() else 'no such file'}")


class _Progress:
    """Progress lines on stderr for a file: audio seconds sent and the pace relative to real time."""

    def __init__(self, source: str, report: Report) -> None:
        self.source, self.report = source, report
        self.started = self._last = time.monotonic()

    def update(self, seconds: float, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            pace = seconds / max(now - self.started, 1e-9)
            done = " - done" if final else ""
            self.report(f"{self.source}: {seconds:.1f} s of audio sent ({pace:.1f}x real time){done}")


async def _ingest_file(source: str, segment: Segment, stop: asyncio.Event, report: Report) -> None:
    """Publish a file as one segment, to its end or until ``stop``."""
    progress = _Progress(source, report)
    publisher = segment.publisher
    segment.begin(time.time_ns())
    async with contextlib.aclosing(_file_audio(source, segment.rate)) as blocks:
        async for block in blocks:
            await segment.publish(block)
            progress.update(publisher.samples_sent / segment.rate)
            if stop.is_set():
                break
    await segment.finish()
    progress.update(publisher.samples_sent / segment.rate, final=True)


async def _ingest_url(url: str, segment: Segment, stop: asyncio.Event, report: Report) -> int:
    """Capture a URL until ``stop``, one segment per ffmpeg connection; the number of segments."""
    ffmpeg = ffmpeg_path()
    assert ffmpeg is not None, "checked by _check_source"
    backoff = BACKOFF_MIN_S
    segments = 0
    next_start_ns = 0
    sleep = stoppable_sleep(stop)
    while not stop.is_set():
        capture = await FfmpegCapture.start(ffmpeg, url, segment.rate)
        stop_watch = asyncio.create_task(stop.wait())  # a shutdown ends ffmpeg, and with it this segment
        stop_watch.add_done_callback(lambda task, c=capture: None if task.cancelled() else c.stop())
        segment.chunker = None
        try:
            async for block in capture.blocks():
                lag = segment.lag_s(block.shape[0])
                if lag > MAX_CAPTURE_LAG_S:
                    report(f"{url}: no audio for {lag:.1f} s (ffmpeg resumed the stream): a new capture segment")
                    await segment.finish()
                    next_start_ns = segment.chunker.end_ns if segment.chunker else 0
                    segment.chunker = None
                if segment.chunker is None:
                    segment.begin(max(time.time_ns(), next_start_ns))
                    segments += 1
                await segment.publish(block)
            await segment.finish()
        finally:
            stop_watch.cancel()
            _, why = await capture.close()
        captured_s = segment.chunker.samples_seen / segment.rate if segment.chunker else 0.0
        if segment.chunker is not None:
            next_start_ns = segment.chunker.end_ns
        if stop.is_set():
            break
        if segments == 0:
            raise IngestError(f"{url}: cannot capture it ({why}); check the URL")
        if captured_s >= STABLE_AUDIO_S:
            backoff = BACKOFF_MIN_S
        what = f"source dropped after {captured_s:.1f} s" if captured_s else "cannot connect"
        report(f"{url}: {what} ({why}); reconnecting in {backoff:.1f} s")
        await sleep(backoff)
        backoff = min(2 * backoff, BACKOFF_MAX_S)
    return segments


async def ingest(
    source: str,
    stream: str,
    broker_url: str,
    *,
    topic: str = TOPIC,
    rate: int = DEFAULT_RATE,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    fast: bool = False,
    stop: asyncio.Event | None = None,
    report: Report = report_stderr,
    security: KafkaSecurity = KafkaSecurity(),
) -> IngestSummary:
    """Publish ``source`` (a file, or a URL captured until ``stop``) as stream ``stream``'s chunks."""
    if not STREAM_ID.match(stream):
        raise IngestError(f"--stream {stream!r}: expected 1-128 of A-Z a-z 0-9 . _ : -")
    size = chunk_samples(rate, chunk_seconds)
    _check_source(source)
    stop = stop or asyncio.Event()
    started = time.monotonic()
    async with ChunkPublisher(broker_url, topic, security) as publisher:
        segment = Segment(stream, rate, size, publisher, Pacer(fast, stoppable_sleep(stop)))
        if is_url(source):
            segments = await _ingest_url(source, segment, stop, report)
        else:
            await _ingest_file(source, segment, stop, report)
            segments = 1
    audio_s = publisher.samples_sent / rate
    return IngestSummary(publisher.sent, audio_s, time.monotonic() - started, segments, stop.is_set())


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(stop)`` in a new event loop; SIGINT and SIGTERM set ``stop`` so it can flush and return."""

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())

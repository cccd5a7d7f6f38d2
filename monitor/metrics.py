"""Prometheus metrics of the worker, declared once. Base units in names; a small fixed label set.

Per-stream series are labelled by stream id only (hundreds of streams is
fine for Prometheus); nothing is labelled by recording.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fingerprint.index import Index

REGISTRY = CollectorRegistry(auto_describe=True)

CHUNKS = Counter("castwatch_chunks", "Audio chunks processed, by stream", ["stream"], registry=REGISTRY)
AUDIO_SECONDS = Counter("castwatch_audio_seconds", "Seconds of audio processed, by stream", ["stream"], registry=REGISTRY)
DUPLICATES = Counter(
    "castwatch_duplicate_chunks", "Chunks dropped as already processed (redelivery, replay)", ["stream"], registry=REGISTRY
)
SEGMENTS = Counter(
    "castwatch_stream_segments", "Breaks in a stream's audio (gap, capture restart, rate change)", ["stream"], registry=REGISTRY
)
CHUNK_SECONDS = Histogram(
    "castwatch_chunk_processing_seconds",
    "Wall time to process one chunk (decode, fingerprint, match, track)",
    buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
DETECTION_LATENCY = Histogram(
    "castwatch_detection_latency_seconds",
    "Stream time from a play's start to its play.started event",
    buckets=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0),
    registry=REGISTRY,
)
PLAYS = Counter("castwatch_play_events", "Play events emitted, by kind (started, ended)", ["event"], registry=REGISTRY)
INFRINGEMENTS = Counter("castwatch_infringements", "Unlicensed plays detected (counted at play.started)", registry=REGISTRY)
DLQ = Counter("castwatch_dlq_messages", "Messages sent to the dead-letter topic, by reason", ["reason"], registry=REGISTRY)
STORE_FAILURES = Gauge(
    "castwatch_store_failures", "Failed attempts to store events in PostgreSQL since start (retried)", registry=REGISTRY
)
LAST_AUDIO = Gauge(
    "castwatch_stream_last_audio_timestamp_seconds",
    "Wall-clock time when the stream's last chunk was processed (alert on time() - this)",
    ["stream"],
    registry=REGISTRY,
)
SILENCE = Gauge(
    "castwatch_stream_seconds_since_audio", "Seconds since the stream's last chunk was processed", ["stream"], registry=REGISTRY
)
INDEX_RECORDINGS = Gauge("castwatch_index_recordings", "Recordings in the in-memory index", registry=REGISTRY)
INDEX_POSTINGS = Gauge("castwatch_index_postings", "Postings in the in-memory index", registry=REGISTRY)
INDEX_BYTES = Gauge("castwatch_index_bytes", "RAM taken by the in-memory index", registry=REGISTRY)
INDEX_GENERATION = Gauge("castwatch_index_generation", "Index swaps since start (catalogue changes applied)", registry=REGISTRY)
LAG = Gauge("castwatch_consumer_lag_messages", "Messages not yet processed, by partition", ["partition"], registry=REGISTRY)


_last_audio: dict[str, float] = {}


def saw_audio(stream: str, seconds: float) -> None:
    CHUNKS.labels(stream).inc()
    AUDIO_SECONDS.labels(stream).inc(seconds)
    if stream not in _last_audio:  # first chunk of this stream: its silence gauge reads the clock at scrape time
        SILENCE.labels(stream).set_function(lambda: time.time() - _last_audio[stream])
    _last_audio[stream] = time.time()
    LAST_AUDIO.labels(stream).set(_last_audio[stream])


def lag_measured(lag_by_partition: dict[int, int]) -> None:
    """Set the lag of the partitions this worker owns now; drop those a rebalance moved elsewhere."""
    LAG.clear()
    for partition, lag in lag_by_partition.items():
        LAG.labels(str(partition)).set(lag)


def index_changed(index: Index) -> None:
    INDEX_RECORDINGS.set(index.n_tracks)
    INDEX_POSTINGS.set(index.n_postings)
    INDEX_BYTES.set(index.nbytes)
    INDEX_GENERATION.inc()

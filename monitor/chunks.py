"""Wire format of audio chunk messages (topic ``audio.chunks.v1``): pure, no I/O.

Key: the stream id, UTF-8. Value: a fixed 32-byte little-endian header, then
PCM signed 16-bit little-endian mono samples:

======  =====  ==========================================================
offset  type   field
======  =====  ==========================================================
0       4s     magic ``b"CWAC"`` (castwatch audio chunk)
4       u16    format version, 1
6       u8     sample format, 1 = s16le
7       u8     channels, 1
8       u32    sample rate in Hz (one of SAMPLE_RATES)
12      u64    sequence number, per stream, consecutive from capture start
20      i64    capture time of the first sample, ns since the Unix epoch
28      u32    sample count
32      ...    samples (2 bytes each)
======  =====  ==========================================================

``decode`` checks everything a message can get wrong on its own and raises
``ChunkError`` with a short machine-readable ``reason`` (the dead-letter
header and metric label) and a message for people. Whether a sequence number
fits the stream's history is the worker's business, not the codec's.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"CWAC"
VERSION = 1
FORMAT_S16LE = 1
HEADER = struct.Struct("<4sHBBIQqI")
HEADER_BYTES = HEADER.size
SAMPLE_RATES = frozenset({8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000})
MAX_CHUNK_SECONDS = 30.0  # capture sends ~1-5 s; anything far larger is a bug upstream
STREAM_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REASONS = (
    "bad_key",
    "truncated",
    "bad_magic",
    "bad_version",
    "bad_format",
    "bad_channels",
    "bad_rate",
    "empty",
    "too_large",
    "bad_length",
)


class ChunkError(ValueError):
    """A message that is not a valid audio chunk; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Chunk:
    stream: str
    sequence: int
    captured_ns: int  # capture time of the first sample
    rate: int
    samples: np.ndarray  # int16, read-only view of the message

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.rate

    @property
    def end_ns(self) -> int:
        """Capture time just after the last sample."""
        return self.captured_ns + round(self.samples.shape[0] * 1e9 / self.rate)


def encode(stream: str, sequence: int, captured_ns: int, rate: int, samples: np.ndarray) -> tuple[bytes, bytes]:
    """(key, value) of one chunk. ``samples``: int16 mono, or float in [-1, 1] (clipped, rounded)."""
    if not STREAM_ID.match(stream):
        raise ChunkError("bad_key", f"stream id {stream!r}: expected 1-128 of A-Z a-z 0-9 . _ : -")
    if rate not in SAMPLE_RATES:
        raise ChunkError("bad_rate", f"sample rate {rate} Hz is not one of {sorted(SAMPLE_RATES)}")
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ChunkError("bad_channels", f"expected mono samples (1-D), found shape {samples.shape}")
    if samples.dtype != np.int16:
        samples = np.clip(np.rint(np.asarray(samples, np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    if not 0 < samples.shape[0] <= MAX_CHUNK_SECONDS * rate:
        raise ChunkError("too_large" if samples.shape[0] else "empty", f"{samples.shape[0]} samples in one chunk")
    header = HEADER.pack(MAGIC, VERSION, FORMAT_S16LE, 1, rate, sequence, captured_ns, samples.shape[0])
    return stream.encode(), header + samples.astype("<i2", copy=False).tobytes()


def decode(key: bytes | None, value: bytes | None) -> Chunk:
    """The chunk in a message, or ChunkError saying what is wrong with it."""
    try:
        stream = (key or b"").decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChunkError("bad_key", f"message key is not UTF-8: {e}") from e
    if not STREAM_ID.match(stream):
        raise ChunkError("bad_key", f"message key {stream[:80]!r} is not a stream id (1-128 of A-Z a-z 0-9 . _ : -)")
    value = value or b""
    if len(value) < HEADER_BYTES:
        raise ChunkError("truncated", f"{len(value)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, sample_format, channels, rate, sequence, captured_ns, count = HEADER.unpack_from(value)
    if magic != MAGIC:
        raise ChunkError("bad_magic", f"magic {magic!r}, expected {MAGIC!r}: not a castwatch audio chunk")
    if version != VERSION:
        raise ChunkError("bad_version", f"chunk format version {version}, this worker reads {VERSION}")
    if sample_format != FORMAT_S16LE:
        raise ChunkError("bad_format", f"sample format {sample_format}, expected {FORMAT_S16LE} (s16le)")
    if channels != 1:
        raise ChunkError("bad_channels", f"{channels} channels, expected mono")
    if rate not in SAMPLE_RATES:
        raise ChunkError("bad_rate", f"sample rate {rate} Hz is not one of {sorted(SAMPLE_RATES)}")
    if count == 0:
        raise ChunkError("empty", "chunk holds no samples")
    if count > MAX_CHUNK_SECONDS * rate:
        raise ChunkError("too_large", f"{count} samples ({count / rate:.0f} s) in one chunk, at most {MAX_CHUNK_SECONDS:.0f} s")
    if len(value) != HEADER_BYTES + 2 * count:
        raise ChunkError(
            "bad_length", f"header says {count} samples ({2 * count} bytes), message carries {len(value) - HEADER_BYTES}"
        )
    samples = np.frombuffer(value, "<i2", count, HEADER_BYTES)
    return Chunk(stream, sequence, captured_ns, rate, samples)

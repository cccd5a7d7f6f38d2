"""monitor.chunks: the audio chunk wire format, round trips and every way a message can be wrong."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.chunks import HEADER, HEADER_BYTES, MAGIC, REASONS, SAMPLE_RATES, ChunkError, decode, encode


def test_header_is_32_bytes_little_endian() -> None:
    key, value = encode("radio-1", 7, 1_700_000_000_123_456_789, 16000, np.array([1, -2, 32767, -32768], np.int16))
    assert key == b"radio-1" and HEADER_BYTES == 32 and len(value) == 32 + 8
    assert value[:4] == b"CWAC"
    assert struct.unpack_from("<H", value, 4) == (1,)
    assert value[6:8] == b"\x01\x01"
    assert struct.unpack_from("<IQqI", value, 8) == (16000, 7, 1_700_000_000_123_456_789, 4)
    assert value[32:] == b"\x01\x00\xfe\xff\xff\x7f\x00\x80"


@given(
    stream=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
    sequence=st.integers(0, 2**64 - 1),
    captured=st.integers(-(2**63), 2**63 - 1),
    rate=st.sampled_from(sorted(SAMPLE_RATES)),
    samples=st.lists(st.integers(-32768, 32767), min_size=1, max_size=500),
)
@settings(max_examples=200, deadline=None)
def test_round_trip(stream: str, sequence: int, captured: int, rate: int, samples: list[int]) -> None:
    pcm = np.array(samples, np.int16)
    chunk = decode(*encode(stream, sequence, captured, rate, pcm))
    assert (chunk.stream, chunk.sequence, chunk.captured_ns, chunk.rate) == (stream, sequence, captured, rate)
    np.testing.assert_array_equal(chunk.samples, pcm)
    assert chunk.seconds == pytest.approx(len(samples) / rate)


def test_float_samples_are_clipped_and_rounded() -> None:
    chunk = decode(*encode("s", 0, 0, 8000, np.array([0.0, 0.5, -1.0, 2.0, -3.0])))
    np.testing.assert_array_equal(chunk.samples, [0, 16384, -32767, 32767, -32768])


def test_end_time() -> None:
    chunk = decode(*encode("s", 0, 10**9, 8000, np.zeros(4000, np.int16)))
    assert chunk.end_ns == 10**9 + 500_000_000


def valid() -> tuple[bytes, bytes]:
    return encode("radio-1", 3, 0, 8000, np.zeros(800, np.int16))


def patched(fmt: str, offset: int, value: object) -> bytes:
    data = bytearray(valid()[1])
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize(
    "key, value, reason, words",
    [
        (b"", valid()[1], "bad_key", "not a stream id"),
        (None, valid()[1], "bad_key", "not a stream id"),
        (b"\xff\xfe", valid()[1], "bad_key", "not UTF-8"),
        (b"radio 1", valid()[1], "bad_key", "not a stream id"),
        (b"x" * 129, valid()[1], "bad_key", "not a stream id"),
        (b"radio-1", b"", "truncated", "shorter than the 32-byte header"),
        (b"radio-1", None, "truncated", "0 bytes"),
        (b"radio-1", valid()[1][:31], "truncated", "31 bytes"),
        (b"radio-1", b"RIFF" + valid()[1][4:], "bad_magic", "not a castwatch audio chunk"),
        (b"radio-1", patched("<H", 4, 2), "bad_version", "version 2"),
        (b"radio-1", patched("<B", 6, 3), "bad_format", "sample format 3"),
        (b"radio-1", patched("<B", 7, 2), "bad_channels", "2 channels"),
        (b"radio-1", patched("<I", 8, 12345), "bad_rate", "12345 Hz"),
        (b"radio-1", patched("<I", 28, 0), "empty", "no samples"),
        (b"radio-1", patched("<I", 28, 2**31), "too_large", "at most 30 s"),
        (b"radio-1", patched("<I", 28, 801), "bad_length", "header says 801 samples"),
        (b"radio-1", valid()[1] + b"\x00\x00", "bad_length", "carries 1602"),
        (b"radio-1", valid()[1][:-1], "bad_length", "carries 1599"),
    ],
)
def test_invalid_messages(key: bytes | None, value: bytes | None, reason: str, words: str) -> None:
    with pytest.raises(ChunkError, match=words) as info:
        decode(key, value)
    assert info.value.reason == reason and reason in REASONS


@given(st.binary(max_size=200), st.binary(max_size=40), st.booleans())
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash(value: bytes, key: bytes, with_magic: bool) -> None:
    """Anything a broker can hand us either decodes or raises ChunkError with a known reason."""
    try:
        decode(key, MAGIC + value if with_magic else value)  # with the magic, the deeper checks run
    except ChunkError as e:
        assert e.reason in REASONS


def test_encode_refuses_what_decode_would_reject() -> None:
    with pytest.raises(ChunkError, match="stream id"):
        encode("bad id", 0, 0, 8000, np.zeros(10, np.int16))
    with pytest.raises(ChunkError, match="sample rate"):
        encode("s", 0, 0, 12345, np.zeros(10, np.int16))
    with pytest.raises(ChunkError, match="mono"):
        encode("s", 0, 0, 8000, np.zeros((10, 2), np.int16))
    with pytest.raises(ChunkError) as info:
        encode("s", 0, 0, 8000, np.zeros(0, np.int16))
    assert info.value.reason == "empty"
    assert HEADER.size == HEADER_BYTES

"""fingerprint.resample: streaming polyphase resampling against scipy's resample_poly of the whole signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from fingerprint.resample import StreamingResampler

RATES = [(16000, 8000), (44100, 8000), (48000, 8000), (22050, 8000), (11025, 8000), (8000, 16000), (32000, 8000)]


def streamed(resampler: StreamingResampler, x: np.ndarray, cuts: list[int]) -> np.ndarray:
    parts, start = [], 0
    for cut in sorted(set(cuts)) + [x.shape[0]]:
        parts.append(resampler.feed(x[start:cut]))
        start = cut
    parts.append(resampler.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("rate, target", RATES)
def test_whole_signal_equals_resample_poly(rate: int, target: int) -> None:
    x = np.random.default_rng(rate).normal(size=rate // 2 + 37)
    g = math.gcd(rate, target)
    expected = resample_poly(x, target // g, rate // g)
    got = streamed(StreamingResampler(rate, target), x, [])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)  # float32 output


@given(
    pair=st.sampled_from(RATES),
    n=st.integers(1, 6000),
    cuts=st.lists(st.integers(0, 6000), max_size=12),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_any_chunking_gives_the_same_output(pair: tuple[int, int], n: int, cuts: list[int], seed: int) -> None:
    rate, target = pair
    x = np.random.default_rng(seed).normal(size=n)
    whole = streamed(StreamingResampler(rate, target), x, [])
    chunked = streamed(StreamingResampler(rate, target), x, [c for c in cuts if c <= n])
    np.testing.assert_array_equal(chunked, whole)


def test_one_sample_chunks_and_empty_chunks() -> None:
    x = np.random.default_rng(1).normal(size=900)
    r = StreamingResampler(44100, 8000)
    parts = [r.feed(np.zeros(0))] + [r.feed(x[i : i + 1]) for i in range(x.shape[0])] + [r.flush()]
    np.testing.assert_allclose(np.concatenate(parts), resample_poly(x, 80, 441), atol=2e-6)


def test_output_arrives_with_a_bounded_delay() -> None:
    r = StreamingResampler(16000, 8000)
    out = r.feed(np.ones(16000))
    assert 8000 - out.shape[0] <= 10  # half the filter, in output samples
    assert out.dtype == np.float32


def test_same_rate_passes_through() -> None:
    r = StreamingResampler(8000, 8000)
    x = np.arange(5, dtype=np.float32)
    assert r.identity
    np.testing.assert_array_equal(r.feed(x), x)
    assert r.flush().shape == (0,)


def test_tone_survives_and_aliases_are_removed() -> None:
    rate = 44100
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t)  # 6 kHz is above the new Nyquist
    y = streamed(StreamingResampler(rate, 8000), tone, [1000, 5000, 20000])
    spectrum = np.abs(np.fft.rfft(y[2000:6000] * np.hanning(4000)))
    freqs = np.fft.rfftfreq(4000, 1 / 8000)
    assert freqs[np.argmax(spectrum)] == pytest.approx(1000, abs=4)
    alias = spectrum[np.abs(freqs - 2000) < 20].max()  # 6 kHz would fold to 2 kHz
    assert alias < 1e-3 * spectrum.max()


def test_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamingResampler(0)

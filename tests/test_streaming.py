"""Streaming equals batch (DESIGN.md): ``Extractor`` fed in any chunking gives ``extract`` of the whole signal.

Bit for bit, every column, for both densities, including empty and
one-sample chunks and signals of about one frame. Also the Extractor's
contract around that: errors for misuse and bad input, the sample count,
the look-ahead after which landmarks are final, and bounded memory.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fingerprint import landmarks, params
from fingerprint.landmarks import LIVE, QUERY, REFERENCE, Density, Extractor, Landmarks, extract
from fingerprint.spectrum import n_frames_for
from fingerprint.synth import music

SR = params.SAMPLE_RATE
N_FFT, HOP = params.N_FFT, params.HOP
DENSITIES = {"reference": REFERENCE, "query": QUERY, "live": LIVE}


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    gapped = music(7.0, seed=8)
    gapped[2 * SR : 3 * SR] = 0.0  # digital silence inside music: peaks next to -23 log power
    gapped[5 * SR + 77 : 5 * SR + 77 + N_FFT] = 0.0
    return {
        "music": music(8.0, seed=6),
        "music_with_gaps": gapped,
        "white_noise": (0.25 * rng.standard_normal(3 * SR)).astype(np.float32),
        "silence": np.zeros(2 * SR, np.float32),
        "shorter_than_a_frame": music(1.0, seed=9)[: N_FFT - 1],
        "exactly_one_frame": music(1.0, seed=9)[:N_FFT],
        "one_frame_and_a_hop_minus_one": music(1.0, seed=9)[: N_FFT + HOP - 1],
        "one_second": music(1.0, seed=10),
    }


SIGNALS = _signals()


@functools.cache
def batch(name: str, density: str) -> Landmarks:
    return extract(SIGNALS[name], DENSITIES[density])


def stream(samples: np.ndarray, sizes: list[int], density: Density) -> Landmarks:
    """Feed ``samples`` in chunks of ``sizes`` (summing to its length), then flush; check the count on the way."""
    assert sum(sizes) == samples.shape[0]
    extractor = Extractor(density)
    parts, at = [], 0
    for size in sizes:
        parts.append(extractor.feed(samples[at : at + size]))
        at += size
        assert extractor.samples_seen == at
    parts.append(extractor.flush())
    assert extractor.samples_seen == samples.shape[0]
    return Landmarks.concat(parts)


def assert_identical(got: Landmarks, want: Landmarks) -> None:
    for name, g, w in zip(Landmarks._fields, got, want):
        assert g.dtype == w.dtype, name
        assert np.array_equal(g, w), f"column {name}: {g.shape[0]} streamed vs {w.shape[0]} batch values differ"


def fixed_chunkings(n: int) -> dict[str, list[int]]:
    def every(size: int) -> list[int]:
        return [size] * (n // size) + ([n % size] if n % size else [])

    sizes = {
        "whole": [n],
        "whole_between_empties": [0, 0, n, 0],
        "hop": every(HOP),
        "hop_minus_one": every(HOP - 1),
        "hop_plus_one": every(HOP + 1),
        "frame": every(N_FFT),
        "one_second": every(SR),
        "odd": every(4099),
    }
    head = min(n, N_FFT + 3 * HOP)  # one sample at a time through the first frames, then the rest
    sizes["single_samples_then_rest"] = [1] * head + ([n - head] if n > head else [])
    if n <= N_FFT + HOP:
        sizes["single_samples"] = [1] * n
    return sizes


@pytest.mark.parametrize("density", list(DENSITIES))
@pytest.mark.parametrize("name", list(SIGNALS))
def test_fixed_chunkings_equal_batch(name: str, density: str) -> None:
    samples = SIGNALS[name]
    want = batch(name, density)
    for label, sizes in fixed_chunkings(samples.shape[0]).items():
        try:
            assert_identical(stream(samples, sizes, DENSITIES[density]), want)
        except AssertionError as e:
            raise AssertionError(f"chunking {label!r}: {e}") from e


def test_the_comparison_covers_many_landmarks() -> None:
    """Guard against a vacuous property: the signals that should give landmarks give plenty."""
    for name in ("music", "music_with_gaps", "white_noise"):
        for density in DENSITIES:
            assert len(batch(name, density)) > 50 * SIGNALS[name].shape[0] / SR, (name, density)
    assert len(batch("music", "query")) > len(batch("music", "reference"))
    assert len(batch("one_second", "reference")) > 0  # short, but long enough for triplets


@st.composite
def chunkings(draw: st.DrawFn, n: int) -> list[int]:
    """Random cut points, runs of one-sample chunks, and empty chunks anywhere."""
    cuts = set(draw(st.lists(st.integers(0, n), max_size=25)))
    for start in draw(st.lists(st.integers(0, n), max_size=2)):
        cuts.update(range(start, min(n, start + draw(st.integers(1, N_FFT + 2 * HOP)))))
    sizes = np.diff(sorted(cuts | {0, n})).tolist()
    for at in sorted(draw(st.lists(st.integers(0, len(sizes)), max_size=4)), reverse=True):
        sizes.insert(at, 0)
    return sizes


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(list(SIGNALS)), density=st.sampled_from(list(DENSITIES)))
def test_random_chunkings_equal_batch(data: st.DataObject, name: str, density: str) -> None:
    samples = SIGNALS[name]
    sizes = data.draw(chunkings(samples.shape[0]), label="chunk sizes")
    assert_identical(stream(samples, sizes, DENSITIES[density]), batch(name, density))


@pytest.mark.parametrize("density", list(DENSITIES))
def test_landmarks_are_final_after_the_lookahead(density: str) -> None:
    """What has been emitted is always a prefix of the batch result, and holds every
    landmark anchored more than LOOKAHEAD_FRAMES frames before the last complete frame."""
    samples, want = SIGNALS["music"], batch("music", density)
    extractor = Extractor(DENSITIES[density])
    emitted = 0
    for at in range(0, samples.shape[0], 1000):
        part = extractor.feed(samples[at : at + 1000])
        assert_identical(part, want.take(slice(emitted, emitted + len(part))))
        emitted += len(part)
        frames = n_frames_for(extractor.samples_seen)
        assert emitted >= int(np.searchsorted(want.t, frames - params.LOOKAHEAD_FRAMES, side="left"))
        # frames_final is exact: everything anchored before it is out, nothing at or after it.
        assert emitted == int(np.searchsorted(want.t, extractor.frames_final, side="left"))
    assert emitted < len(want)  # some were held back until the end of the stream
    assert_identical(extractor.flush(), want.take(slice(emitted, None)))


@pytest.mark.parametrize("density", list(DENSITIES))
def test_provisional_landmarks_are_those_of_the_audio_so_far_and_change_nothing(density: str) -> None:
    """At any point, what was emitted plus ``provisional`` is the batch result of the prefix
    (the signal as if it ended there), and peeking leaves the stream's own landmarks untouched."""
    samples = SIGNALS["music"]
    extractor = Extractor(DENSITIES[density])
    emitted: list[Landmarks] = []
    final, differs = batch("music", density), 0
    for at in range(0, samples.shape[0], 3001):
        emitted.append(extractor.feed(samples[at : at + 3001]))
        tail = extractor.provisional()
        assert not len(tail) or int(tail.t.min()) >= extractor.frames_final
        assert not len(tail) or int(tail.t.max()) < extractor.frames_seen
        prefix = samples[: extractor.samples_seen]
        assert_identical(Landmarks.concat([*emitted, tail]), extract(prefix, DENSITIES[density]))
        settled = final.take(slice(int(np.searchsorted(final.t, extractor.frames_final)), None))
        settled = settled.take(settled.t < extractor.frames_seen)
        differs += len(tail) != len(settled) or not all(np.array_equal(a, b) for a, b in zip(tail, settled))
    assert differs  # a peek sees less context than the final landmarks do: somewhere they differ
    assert_identical(Landmarks.concat([*emitted, extractor.flush()]), batch("music", density))


def test_provisional_after_flush_raises() -> None:
    extractor = Extractor()
    extractor.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        extractor.provisional()


def test_feeding_after_flush_raises() -> None:
    extractor = Extractor()
    extractor.feed(SIGNALS["one_second"])
    extractor.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        extractor.feed(SIGNALS["one_second"])
    with pytest.raises(RuntimeError, match="flushed"):
        extractor.feed(np.zeros(0, np.float32))


def test_flushing_twice_raises() -> None:
    extractor = Extractor()
    extractor.flush()
    with pytest.raises(RuntimeError, match="already flushed"):
        extractor.flush()


@pytest.mark.parametrize(
    "bad, error, says",
    [
        (np.zeros(800, np.float64), TypeError, r"float32.*astype\(np.float32\)"),
        (np.zeros(800, np.int16), TypeError, r"float32.*got int16"),
        (np.zeros((400, 2), np.float32), ValueError, r"1-D.*shape \(400, 2\)"),
        (np.float32(0.5), ValueError, r"1-D"),
        ([0.0] * 800, ValueError, r"1-D numpy array.*got list"),
    ],
    ids=["float64", "int16", "stereo", "scalar", "list"],
)
def test_bad_chunks_raise_helpful_errors_and_lose_nothing(bad: object, error: type, says: str) -> None:
    samples = SIGNALS["music"]
    extractor = Extractor()
    head = extractor.feed(samples[: 3 * SR])
    with pytest.raises(error, match=says):
        extractor.feed(bad)  # type: ignore[arg-type]
    assert extractor.samples_seen == 3 * SR  # the rejected chunk left no trace
    rest = Landmarks.concat([head, extractor.feed(samples[3 * SR :]), extractor.flush()])
    assert_identical(rest, batch("music", "reference"))
    with pytest.raises(error, match=says):
        extract(bad)  # type: ignore[arg-type]


def test_non_finite_samples_are_rejected_or_harmless() -> None:
    """A NaN in a chunk (a broken decoder, a bad float file) must not take the worker down.

    Run in a child process: it once corrupted the heap. Either a
    ValueError or finite landmarks are acceptable answers.
    """
    code = textwrap.dedent(
        """
        import numpy as np
        from fingerprint.landmarks import Extractor, Landmarks
        from fingerprint.synth import music
        samples = music(4.0, seed=1)
        samples[20000:20001] = np.nan
        extractor = Extractor()
        try:
            parts = [extractor.feed(samples[at : at + 256]) for at in range(0, samples.shape[0], 256)]
            found = Landmarks.concat(parts + [extractor.flush()])
        except ValueError as e:
            print("rejected:", e)
        else:
            assert all(np.isfinite(column).all() for column in found), "non-finite landmarks"
            print("finite")
        """
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, f"exit status {child.returncode}: {child.stderr[-2000:]}"


@pytest.mark.parametrize("density", list(DENSITIES))
def test_digital_silence_yields_no_landmarks(density: str) -> None:
    assert len(batch("silence", density)) == 0
    assert len(stream(SIGNALS["silence"], fixed_chunkings(2 * SR)["hop"], DENSITIES[density])) == 0
    assert len(extract(np.zeros(10 * SR, np.float32), DENSITIES[density])) == 0
    assert landmarks.peaks_of(np.zeros(10 * SR, np.float32)).t.shape[0] == 0


def test_short_signals_yield_no_landmarks() -> None:
    for name in ("shorter_than_a_frame", "exactly_one_frame", "one_frame_and_a_hop_minus_one"):
        for density in DENSITIES:
            assert len(batch(name, density)) == 0, name  # a triplet spans at least ZONE_DT_MIN frames


def test_samples_seen_counts_every_sample() -> None:
    extractor = Extractor(QUERY)
    rng = np.random.default_rng(4)
    total = 0
    for size in [0, 1, 1, HOP - 2, N_FFT, 0, 3 * N_FFT + 5, 1, 12345]:
        extractor.feed(rng.standard_normal(size).astype(np.float32))
        total += size
        assert extractor.samples_seen == total
    extractor.flush()
    assert extractor.samples_seen == total


@pytest.mark.parametrize("density", list(DENSITIES))
def test_memory_stays_bounded(density: str) -> None:
    """Ten minutes in one-second chunks: the buffers hold a look-ahead's worth of context, not the stream."""
    rng = np.random.default_rng(10)
    minute = music(60.0, seed=12) + (0.05 * rng.standard_normal(60 * SR)).astype(np.float32)  # many candidates
    top_k = sum(DENSITIES[density].top_k)
    chunk_frames = math.ceil(SR / HOP) + 1
    context = params.LOOKAHEAD_FRAMES + chunk_frames  # frames of context the pipeline may need
    bounds = {
        "spectrum rows": context,
        "candidates": context * (params.N_BINS // (DENSITIES[density].peak_df + 1) + 1),
        # per band, any PEAK_WINDOW + 1 consecutive frames keep at most its quota of peaks
        "peaks": top_k * (math.ceil(context / (params.PEAK_WINDOW + 1)) + 1),
        "pending samples": N_FFT,
    }
    largest = dict.fromkeys(bounds, 0)
    extractor = Extractor(DENSITIES[density])
    emitted = 0
    for _ in range(10):
        for second in range(60):
            emitted += len(extractor.feed(minute[second * SR : (second + 1) * SR]))
            sizes = {
                "spectrum rows": extractor._spec.shape[0],
                "candidates": extractor._cands.t.shape[0],
                "peaks": extractor._peaks.t.shape[0],
                "pending samples": extractor._pcm.shape[0],
            }
            for key, size in sizes.items():
                largest[key] = max(largest[key], size)
    assert extractor.samples_seen == 600 * SR
    assert emitted > 600 * 50  # it did work all along
    for key, bound in bounds.items():
        assert largest[key] <= bound, f"{key}: {largest[key]} > {bound}"


@pytest.mark.parametrize("peak_df", [0, params.PEAK_DF + 1])
def test_a_peak_neighbourhood_outside_the_guard_band_is_refused(peak_df: int) -> None:
    """The spectrogram reaches PEAK_DF bins beyond the band: a wider maximum would compare against bins it does not have."""
    with pytest.raises(ValueError, match=f"peak_df must be 1 to {params.PEAK_DF} bins"):
        Extractor(LIVE._replace(peak_df=peak_df))

"""Every Numba kernel of the engine against its slow, obviously correct twin in ``naive``.

Random inputs (hypothesis, small shapes, values drawn so that ties, plateaus
and cell edges happen) and synthetic signals (music, sweeps, noise, silence,
signals of about one frame). Discrete outputs (positions, selections, triplet
membership, keys, vote counts) must be equal; floats agree to a few float32
ulps. Parameter values come from ``fingerprint.params`` (and the matcher's
module constants), so the checks hold while those values are tuned.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fingerprint import hashes, landmarks, matcher, params, spectrum
from fingerprint import index as index_mod
from fingerprint.landmarks import QUERY, REFERENCE, Density
from fingerprint.synth import music

FEW = settings(max_examples=40, deadline=None)
SR = params.SAMPLE_RATE
# Log power: the kernel's float64 radix-2 FFT against pocketfft's. The kernel's
# float32 output is the float64 reference rounded, to within one ulp (9.5e-7
# for |log power| in [16, 32)); allow two.
LOG_ATOL = 2e-6
FLOAT32_ULPS = dict(rtol=4e-7, atol=1e-6)  # float32 results computed in float64 in a different order


def sweep(seconds: float, f0: float = 60.0, f1: float = 3700.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.8 * np.sin(phase)).astype(np.float32)


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    gapped = music(4.0, seed=5)
    gapped[SR : 2 * SR] = 0.0
    return {
        "music": music(4.0, seed=3),
        "music_with_silence": gapped,
        "sweep": sweep(3.0),
        "white_noise": (0.3 * rng.standard_normal(2 * SR)).astype(np.float32),
        "full_scale_square": np.sign(np.sin(2 * np.pi * 441 * np.arange(SR) / SR)).astype(np.float32),
        "whisper": (1e-4 * rng.standard_normal(SR)).astype(np.float32),
        "silence": np.zeros(SR, np.float32),
        "one_frame": music(1.0, seed=4)[: params.N_FFT],
        "two_frames_minus_one": music(1.0, seed=4)[: params.N_FFT + params.HOP - 1],
        "shorter_than_a_frame": music(1.0, seed=4)[: params.N_FFT - 1],
        "empty": np.zeros(0, np.float32),
    }


SIGNALS = signals()


@pytest.fixture(scope="module")
def spectrograms() -> dict[str, np.ndarray]:
    return {name: spectrum.log_spectrogram(x) for name, x in SIGNALS.items()}


def local_peaks_kernel(
    spec: np.ndarray, first: int = 0, last: int | None = None, peak_df: int = params.PEAK_DF
) -> tuple[np.ndarray, ...]:
    last = spec.shape[0] if last is None else last
    return landmarks._local_peaks(
        spec, first, last, params.PEAK_DT, peak_df, params.PEAK_DF, params.CONTRAST_DF, params.SILENCE_LOG_POWER
    )


def assert_peaks_equal(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    t, f, contrast, t_frac, f_frac = got
    np.testing.assert_array_equal(t, want[0])
    np.testing.assert_array_equal(f, want[1])
    np.testing.assert_allclose(contrast, want[2], rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(t_frac, want[3], **FLOAT32_ULPS)
    np.testing.assert_allclose(f_frac, want[4], **FLOAT32_ULPS)
    assert t.dtype == np.int64 and f.dtype == np.int32
    assert all(column.dtype == np.float32 for column in (contrast, t_frac, f_frac))


# --- spectrum -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SIGNALS))
def test_log_spectrogram_matches_rfft(name: str, spectrograms: dict[str, np.ndarray]) -> None:
    samples = SIGNALS[name]
    got = spectrograms[name]
    want = naive.log_spectrogram(samples)
    assert got.shape == want.shape == (naive.n_frames_for(samples.shape[0]), params.N_BINS)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=LOG_ATOL)


def test_n_frames_for_counts_complete_frames() -> None:
    for n in [0, 1, params.N_FFT - 1, params.N_FFT, params.N_FFT + params.HOP - 1, params.N_FFT + params.HOP, 10**5]:
        assert spectrum.n_frames_for(n) == naive.n_frames_for(n), n


@FEW
@given(
    n_samples=st.integers(0, params.N_FFT + 12 * params.HOP),
    log_amplitude=st.floats(-6, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_log_spectrogram_random(n_samples: int, log_amplitude: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = (10**log_amplitude * rng.standard_normal(n_samples)).astype(np.float32)
    np.testing.assert_allclose(spectrum.log_spectrogram(samples), naive.log_spectrogram(samples), rtol=0, atol=LOG_ATOL)


@pytest.mark.parametrize("hop", [1, 100, params.HOP, params.N_FFT])
def test_log_power_frames_whole_spectrum(hop: int) -> None:
    """Every bin including DC and Nyquist (where the real-FFT split wraps around), at other hops."""
    samples = np.ascontiguousarray(SIGNALS["music"][: params.N_FFT + 6 * hop])
    n_frames, n_out = 7, params.N_FFT // 2 + 1
    got = spectrum._log_power_frames(
        samples, n_frames, spectrum._WINDOW, spectrum._REV, spectrum._TWIDDLE, spectrum._SPLIT, hop, 0, n_out
    )
    want = naive.log_power_frames(samples, n_frames, hop, 0, n_out)
    np.testing.assert_allclose(got, want, rtol=0, atol=LOG_ATOL)


def test_log_spectrogram_sine_peaks_at_its_bin() -> None:
    """A check of the twin itself: a bin-centred sine puts its maximum in that bin."""
    k = (params.BIN_LO + params.BIN_HI) // 2
    samples = (0.5 * np.sin(2 * np.pi * k * params.BIN_HZ * np.arange(4 * params.N_FFT) / SR)).astype(np.float32)
    for spec in (spectrum.log_spectrogram(samples), naive.log_spectrogram(samples)):
        assert set(np.argmax(spec, axis=1) + params.BIN_LO) == {k}


def test_log_spectrogram_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="float32"):
        spectrum.log_spectrogram(np.zeros(params.N_FFT, np.float64))
    with pytest.raises(ValueError, match="1-D"):
        spectrum.log_spectrogram(np.zeros((2, params.N_FFT), np.float32))


# --- local peaks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("peak_df", [params.PEAK_DF, params.LIVE_PEAK_DF])
@pytest.mark.parametrize("name", list(SIGNALS))
def test_local_peaks_synthetic(name: str, peak_df: int, spectrograms: dict[str, np.ndarray]) -> None:
    spec = spectrograms[name]
    want = naive.local_peaks(
        spec, 0, spec.shape[0], params.PEAK_DT, peak_df, params.PEAK_DF, params.CONTRAST_DF, params.SILENCE_LOG_POWER
    )
    assert_peaks_equal(local_peaks_kernel(spec, peak_df=peak_df), want)
    if name in ("music", "sweep", "white_noise"):
        assert want[0].shape[0] > 10 * spec.shape[0] / params.FRAME_RATE  # the comparison covered many peaks
    if name in ("silence", "empty", "shorter_than_a_frame"):
        assert want[0].shape[0] == 0


@pytest.mark.parametrize("name", ["music", "music_with_silence", "white_noise"])
def test_local_peaks_row_range_of_a_longer_spectrogram(name: str, spectrograms: dict[str, np.ndarray]) -> None:
    """Rows [first, last) only, with the rows around them as context (how the Extractor calls it)."""
    spec = spectrograms[name]
    first, last = 9, spec.shape[0] - 13
    want = naive.local_peaks(
        spec, first, last, params.PEAK_DT, params.PEAK_DF, params.PEAK_DF, params.CONTRAST_DF, params.SILENCE_LOG_POWER
    )
    assert_peaks_equal(local_peaks_kernel(spec, first, last), want)
    assert want[0].min() >= first and want[0].max() < last


@FEW
@given(
    rows=st.integers(0, 24),
    bins=st.integers(0, 40),
    values=st.sampled_from(["few_levels", "continuous", "plateaus"]),
    peak_dt=st.integers(0, 3),
    peak_df=st.integers(0, 4),
    guard=st.integers(0, 4),
    contrast_df=st.integers(0, 12),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_local_peaks_random(
    rows: int,
    bins: int,
    values: str,
    peak_dt: int,
    peak_df: int,
    guard: int,
    contrast_df: int,
    seed: int,
    data: st.DataObject,
) -> None:
    rng = np.random.default_rng(seed)
    if values == "few_levels":  # exact ties everywhere
        spec = rng.integers(-2, 3, (rows, bins)).astype(np.float32)
    elif values == "continuous":
        spec = rng.normal(0, 3, (rows, bins)).astype(np.float32)
    else:  # blocks of equal values, as silence floors and clipped tones give
        spec = np.repeat(np.repeat(rng.integers(-2, 3, (rows // 3 + 1, bins // 3 + 1)), 3, 0), 3, 1)
        spec = spec[:rows, :bins].astype(np.float32)
    silence = data.draw(st.sampled_from([-np.inf, -1.0, 0.0, 1.5]))
    first = data.draw(st.integers(0, rows))
    last = data.draw(st.integers(first, rows))
    spec = np.ascontiguousarray(spec)
    got = landmarks._local_peaks(spec, first, last, peak_dt, peak_df, guard, contrast_df, silence)
    assert_peaks_equal(got, naive.local_peaks(spec, first, last, peak_dt, peak_df, guard, contrast_df, silence))


def test_flat_region_gives_one_peak_at_its_first_cell() -> None:
    """The raster tie rule: a plateau wider and taller than the neighbourhood has exactly one maximum."""
    spec = np.full((20, 60), params.SILENCE_LOG_POWER - 1.0, np.float32)
    spec[5:15, 20:40] = 3.0
    for got in (local_peaks_kernel(spec), naive.local_peaks(spec, 0, 20, params.PEAK_DT, params.PEAK_DF, params.PEAK_DF,
                                                               params.CONTRAST_DF, params.SILENCE_LOG_POWER)):
        assert got[0].tolist() == [5] and got[1].tolist() == [20]


def test_guard_band_bins_are_never_peaks() -> None:
    spec = np.full((9, 50), params.SILENCE_LOG_POWER - 1.0, np.float32)
    spec[2, 0] = spec[2, 49] = 5.0  # isolated maxima inside the guard bands
    spec[6, params.PEAK_DF] = spec[6, 49 - params.PEAK_DF] = 4.0  # the outermost bins outside them
    for peak_df in (params.PEAK_DF, params.LIVE_PEAK_DF):  # a narrower neighbourhood keeps the guard band
        t, f, *_ = local_peaks_kernel(spec, peak_df=peak_df)
        assert t.tolist() == [6, 6] and f.tolist() == [params.PEAK_DF, 49 - params.PEAK_DF]


def test_a_narrow_neighbourhood_keeps_a_peak_beside_a_louder_one() -> None:
    """Two maxima 3 bins apart: over +-PEAK_DF bins only the louder is a peak, over +-LIVE_PEAK_DF both are."""
    spec = np.full((9, 60), params.SILENCE_LOG_POWER - 1.0, np.float32)
    spec[4, 30], spec[4, 33] = 6.0, 3.0
    assert local_peaks_kernel(spec)[1].tolist() == [30]
    assert local_peaks_kernel(spec, peak_df=params.LIVE_PEAK_DF)[1].tolist() == [30, 33]


def test_silence_gives_no_peaks() -> None:
    spec = np.full((30, params.N_BINS), params.SILENCE_LOG_POWER, np.float32)  # at the threshold, not above
    spec[10, 100] = params.SILENCE_LOG_POWER - 1.0
    assert local_peaks_kernel(spec)[0].shape[0] == 0
    spec[15, 200] = params.SILENCE_LOG_POWER + 0.5
    assert local_peaks_kernel(spec)[0].tolist() == [15]


@pytest.mark.parametrize(
    "left, centre, right",
    [(1.0, 2.0, 1.0), (1.0, 2.0, 1.5), (1.9, 2.0, 0.0), (2.0, 2.0, 0.0), (0.0, 2.0, 2.0), (2.0, 2.0, 2.0),
     (3.0, 2.0, 3.0), (0.0, 1.0, 10.0), (10.0, 1.0, 0.0), (-23.0, -8.0, -23.0)],
)  # fmt: skip
def test_parabolic_offset(left: float, centre: float, right: float) -> None:
    values = [np.float32(v) for v in (left, centre, right)]
    got = landmarks._parabolic_offset(*values)
    assert got == pytest.approx(naive.parabolic_offset(*values), abs=1e-7)
    assert -0.5 <= got <= 0.5


# --- peak selection -----------------------------------------------------------------------------------


def candidates(spec: np.ndarray) -> tuple[np.ndarray, ...]:
    return local_peaks_kernel(spec)


@pytest.mark.parametrize("density", [REFERENCE, QUERY], ids=["reference", "query"])
@pytest.mark.parametrize("name", ["music", "music_with_silence", "sweep", "white_noise", "one_frame"])
def test_select_top_synthetic(name: str, density: Density, spectrograms: dict[str, np.ndarray]) -> None:
    t, f, contrast, _, _ = candidates(spectrograms[name])
    args = (t, f, contrast, landmarks._BAND_OF_BIN, 0, t.shape[0], params.PEAK_WINDOW, density.quotas())
    got = landmarks._select_top(*args)
    want = naive.select_top(*args)
    np.testing.assert_array_equal(got, want)
    if name in ("music", "white_noise"):
        assert 0 < want.shape[0] < t.shape[0]  # the rank rule did select


@FEW
@given(
    n=st.integers(0, 150),
    max_step=st.integers(0, 4),
    levels=st.sampled_from([3, 50, 0]),
    window=st.integers(0, 20),
    top_k=st.lists(st.integers(1, 8), min_size=4, max_size=4),
    random_bands=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_select_top_random(
    n: int, max_step: int, levels: int, window: int, top_k: list[int], random_bands: bool, seed: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, max_step + 1, n)).astype(np.int64)
    f = rng.integers(0, params.N_BINS, n).astype(np.int32)
    order = np.lexsort((f, t))
    t, f = t[order], f[order]
    contrast = (rng.integers(0, levels, n) if levels else rng.normal(0, 2, n)).astype(np.float32)
    bands = rng.integers(0, 3, params.N_BINS).astype(np.int32) if random_bands else landmarks._BAND_OF_BIN
    first = data.draw(st.integers(0, n))
    last = data.draw(st.integers(first, n))
    args = (t, f, contrast, bands, first, last, window, np.asarray(top_k, np.int64))
    np.testing.assert_array_equal(landmarks._select_top(*args), naive.select_top(*args))


def test_band_of_bin_has_the_documented_bands() -> None:
    """PEAK_BAND_EDGES_HZ delimit len(edges) - 1 bands; every bin that can hold a peak is in one of them."""
    peak_bins = slice(params.PEAK_DF, params.N_BINS - params.PEAK_DF)
    n_bands = len(params.PEAK_BAND_EDGES_HZ) - 1
    assert set(landmarks._BAND_OF_BIN[peak_bins].tolist()) <= set(range(n_bands))
    np.testing.assert_array_equal(landmarks._BAND_OF_BIN[peak_bins], naive.band_of_bin()[peak_bins])


# --- triplets -----------------------------------------------------------------------------------------


def assert_triplets_equal(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    names = ("t", "lf1", "dlf2", "dlf3", "dt2", "dt3")
    assert [c.shape[0] for c in got] == [c.shape[0] for c in want]
    np.testing.assert_array_equal(got[0], want[0], err_msg="t")
    for name, g, w in zip(names[1:], got[1:], want[1:]):
        # Same arithmetic in the same types: equal, not merely close.
        np.testing.assert_array_equal(g, w, err_msg=name)
        assert g.dtype == np.float32, name


def peaks_for_triplets(samples: np.ndarray, density: Density) -> landmarks.Peaks:
    return landmarks.peaks_of(samples, density)


@pytest.mark.parametrize("density", [REFERENCE, QUERY], ids=["reference", "query"])
@pytest.mark.parametrize("name", ["music", "music_with_silence", "sweep", "white_noise"])
def test_triplets_synthetic(name: str, density: Density) -> None:
    peaks = peaks_for_triplets(SIGNALS[name], density)
    lf = landmarks._log2_hz(peaks)
    zone = (params.ZONE_DT_MIN, params.ZONE_DT_MAX, params.ZONE_DF_OCT)
    n = peaks.t.shape[0]
    args = (
        peaks.t, peaks.t_frac, lf, peaks.contrast, 0, n, *zone, density.targets, density.max_triplets,
        params.MONOTONE_OCT,
    )  # fmt: skip
    want = naive.triplets(*args)
    assert_triplets_equal(landmarks._triplets(*args), want)
    if name != "sweep":
        assert want[0].shape[0] > peaks.t.shape[0]  # anchors did find targets


@FEW
@given(
    n=st.integers(0, 70),
    max_step=st.integers(0, 3),
    levels=st.sampled_from([2, 4, 0]),
    quantised_lf=st.booleans(),
    dt_min=st.integers(1, 4),  # the kernel scans forward from the anchor: right while ZONE_DT_MIN >= 1
    dt_span=st.integers(0, 12),
    df_oct=st.sampled_from([0.25, 0.5, 1.0, params.ZONE_DF_OCT]),
    targets=st.integers(1, 6),
    max_triplets=st.integers(0, 16),
    monotone_oct=st.sampled_from([0.0, params.MONOTONE_OCT, 0.3]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_triplets_random(
    n: int, max_step: int, levels: int, quantised_lf: bool, dt_min: int, dt_span: int, df_oct: float,
    targets: int, max_triplets: int, monotone_oct: float, seed: int, data: st.DataObject,
) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(0, max_step + 1, n)).astype(np.int64)
    f = rng.integers(0, 400, n)
    order = np.lexsort((f, t))
    t = t[order]
    # Quantised log frequencies put zone edges (|lf - lf_anchor| == df_oct) on exact values.
    lf = (rng.integers(0, 25, n) * 0.25 + 6 if quantised_lf else rng.uniform(5.8, 11.9, n)).astype(np.float32)
    contrast = (rng.integers(0, levels, n) if levels else rng.normal(3, 1, n)).astype(np.float32)
    t_frac = rng.choice([rng.uniform(-0.5, 0.5), 0.0, 0.5, -0.5], n).astype(np.float32)
    first = data.draw(st.integers(0, n))
    last = data.draw(st.integers(first, n))
    args = (t, t_frac, lf, contrast, first, last, dt_min, dt_min + dt_span, df_oct, targets, max_triplets, monotone_oct)
    assert_triplets_equal(landmarks._triplets(*args), naive.triplets(*args))


def test_triplet_pairs_are_strongest_first() -> None:
    """Hand-made: anchor 0 and four targets of contrasts 1, 4, 3, 2 (in time order)."""
    t = np.array([0, 3, 4, 5, 6], np.int64)
    lf = np.full(5, 8.0, np.float32)
    contrast = np.array([9, 1, 4, 3, 2], np.float32)
    t_frac = np.zeros(5, np.float32)
    # strongest first: peaks 2, 3, 4, 1 -> pairs (2,3), (2,4), (3,4), (2,1), (3,1), (4,1)
    expected = [(0, 2, 3), (0, 2, 4), (0, 3, 4), (0, 1, 2), (0, 1, 3), (0, 1, 4)]
    for max_triplets in range(0, 8):
        got = landmarks._triplets(t, t_frac, lf, contrast, 0, 1, 1, 10, 1.0, 4, max_triplets, 0.0)
        want = expected[:max_triplets]
        assert got[4].tolist() == [float(t[j]) for _, j, _ in want]  # dt2
        assert got[5].tolist() == [float(t[k]) for _, _, k in want]  # dt3
        assert naive.triplet_indices(t, lf, contrast, 0, 1, 1, 10, 1.0, 4, max_triplets, 0.0) == want


def test_monotone_triplets_are_skipped_and_do_not_count() -> None:
    """A note repeated in rhythm (targets at the anchor's pitch) forms no triplet; the next pairs take its place."""
    t = np.array([0, 3, 4, 5, 6], np.int64)
    lf = np.array([8.0, 8.0, 8.0, 8.5, 9.0], np.float32)  # peaks 1 and 2 repeat the anchor's note
    contrast = np.array([9, 4, 3, 2, 1], np.float32)
    t_frac = np.zeros(5, np.float32)
    got = landmarks._triplets(t, t_frac, lf, contrast, 0, 1, 1, 10, 1.0, 4, 3, params.MONOTONE_OCT)
    # strongest first: 1, 2, 3, 4 -> (1,2) is monotone and skipped; (1,3), (2,3), (1,4) follow
    assert got[4].tolist() == [3.0, 4.0, 3.0] and got[5].tolist() == [5.0, 5.0, 6.0]
    assert np.all((np.abs(got[2]) >= params.MONOTONE_OCT) | (np.abs(got[3]) >= params.MONOTONE_OCT))


def test_triplet_ties_go_to_the_earlier_peak() -> None:
    """Five zone peaks of equal contrast and three targets: the three earliest are chosen."""
    t = np.arange(0, 12, 2, dtype=np.int64)
    lf = np.full(6, 8.0, np.float32)
    contrast = np.array([9, 1, 1, 1, 1, 1], np.float32)
    t_frac = np.zeros(6, np.float32)
    got = landmarks._triplets(t, t_frac, lf, contrast, 0, 1, 1, 10, 1.0, 3, 3, 0.0)
    expected = [(0, 1, 2), (0, 1, 3), (0, 2, 3)]
    assert naive.triplet_indices(t, lf, contrast, 0, 1, 1, 10, 1.0, 3, 3, 0.0) == expected
    assert got[4].tolist() == [float(t[j]) for _, j, _ in expected]
    assert got[5].tolist() == [float(t[k]) for _, _, k in expected]


# --- hashing ------------------------------------------------------------------------------------------

def assert_keys_equal(columns: tuple[np.ndarray, ...], probe: bool) -> None:
    columns = tuple(np.ascontiguousarray(c, dtype=np.float32) for c in columns)
    keys, owner = hashes._hash_keys(*columns, probe, hashes.CONFIG)
    want_keys, want_owner = naive.hash_keys(*columns, probe)
    np.testing.assert_array_equal(owner, want_owner)
    np.testing.assert_array_equal(keys, want_keys)
    assert keys.dtype == np.uint32 and int(keys.max(initial=0)) < 2**params.HASH_BITS


@pytest.mark.parametrize("probe", [False, True], ids=["reference", "probes"])
@pytest.mark.parametrize("density", [REFERENCE, QUERY], ids=["reference", "query"])
def test_hash_keys_of_music(density: Density, probe: bool) -> None:
    found = landmarks.extract(SIGNALS["music"], density)
    assert len(found) > 100
    assert_keys_equal((found.lf1, found.dlf2, found.dlf3, found.dt2, found.dt3), probe)


@FEW
@given(n=st.integers(0, 120), probe=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_hash_keys_random(n: int, probe: bool, seed: int) -> None:
    """Wide ranges, so that every field's clamps are exercised."""
    rng = np.random.default_rng(seed)
    lf1 = rng.uniform(params.HASH_F1_BASE - 1.0, params.HASH_F1_BASE + 9.0, n)
    dlf2, dlf3 = rng.uniform(-2.5, 2.5, (2, n))
    dt3 = np.exp2(rng.uniform(0.5, 6.5, n))
    dt2 = dt3 * rng.uniform(0.02, 1.2, n)  # ratios above 1 happen: targets in the same frame
    assert_keys_equal((lf1, dlf2, dlf3, dt2, dt3), probe)


@pytest.mark.parametrize("probe", [False, True], ids=["reference", "probes"])
def test_hash_keys_on_cell_edges(probe: bool) -> None:
    """Values exactly on quantisation edges, where a different rounding would change the key."""
    rng = np.random.default_rng(3)
    n = 4000
    coarse = np.arange(-2, 2**hashes._COARSE_BITS + 2) * params.HASH_COARSE_STEP
    df_edges = np.arange(-(2 ** (hashes._DF_BITS - 1)) - 3, 2 ** (hashes._DF_BITS - 1) + 3) * params.HASH_DF_STEP
    r_cells = round(1 / params.HASH_R_STEP)
    # Spans on whole-octave edges have exact logarithms; a half-octave edge 2**(k + 0.5) is not a float, and
    # on the float next to it a float32 log2 may round either way (libm and numpy differ by an ulp there).
    dt3 = rng.choice(np.concatenate((np.exp2(np.arange(-1.0, 8.0)), np.arange(1.0, 34.0))), n)
    columns = (
        rng.choice(params.HASH_F1_BASE + coarse, n),
        rng.choice(df_edges, n),
        rng.choice(df_edges, n),
        dt3 * rng.integers(1, r_cells + 2, n) / r_cells,
        dt3,
    )
    assert_keys_equal(columns, probe)


def test_reference_key_is_among_query_probes() -> None:
    """Probing adds neighbours; it never loses the triplet's own cell."""
    found = landmarks.extract(SIGNALS["music"], QUERY)
    reference = hashes.hash_landmarks(found)
    keys, owner = hashes.probe_keys(found)
    assert reference.shape[0] == len(found)
    probes: dict[int, set[int]] = {}
    for key, i in zip(keys.tolist(), owner.tolist()):
        probes.setdefault(i, set()).add(key)
    assert all(int(reference[i]) in probes[i] for i in range(len(found)))
    assert keys.shape[0] > reference.shape[0]  # and some triplets do probe neighbours


# --- index --------------------------------------------------------------------------------------------


def random_postings(rng: np.random.Generator, n: int, n_keys: int) -> tuple[np.ndarray, ...]:
    """Keys from a small pool (many postings per key, several keys per group the lookup visits together), frames with repeats."""
    anywhere = rng.integers(0, 2**params.HASH_BITS, n_keys // 2)
    bucket = 2**matcher.VISIT_SHIFT
    same_bucket = anywhere // bucket * bucket + rng.integers(0, bucket, anywhere.size)
    pool = np.concatenate((anywhere, same_bucket, [0, 2**params.HASH_BITS - 1]))
    keys = rng.choice(pool, n).astype(np.uint32)
    frames = rng.integers(0, 5000, n).astype(np.uint32)
    spans = rng.integers(0, 256, n).astype(np.uint8)
    pitches = rng.integers(0, 256, n).astype(np.uint8)
    return keys, frames, spans, pitches


def frozen(keys: np.ndarray, frames: np.ndarray, spans: np.ndarray, pitches: np.ndarray) -> index_mod.Index:
    return index_mod._freeze(keys, frames, spans, pitches, ("only",), np.array([0, 5000], np.int64))


def query_keys(rng: np.random.Generator, keys: np.ndarray, n: int) -> np.ndarray:
    """Present keys, their directory neighbours (absent or not), random keys and the extremes."""
    present = rng.choice(keys, n) if keys.size else np.zeros(0, np.uint32)
    near = np.clip(present.astype(np.int64) + rng.integers(-2, 3, present.size), 0, 2**params.HASH_BITS - 1)
    anywhere = rng.integers(0, 2**params.HASH_BITS, n)
    return np.concatenate((present, near, anywhere, [0, 2**params.HASH_BITS - 1])).astype(np.uint32)


@FEW
@given(n=st.integers(0, 3000), n_keys=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_directory_ranges_random(n: int, n_keys: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys, frames, spans, pitches = random_postings(rng, n, n_keys)
    index = frozen(keys, frames, spans, pitches)
    table = naive.postings_dict(keys, frames, spans, pitches)
    for key in query_keys(rng, keys, 60).tolist():
        lo, hi = int(index.directory[key]), int(index.directory[key + 1])
        want = table.get(key, [])
        assert index.records[lo:hi].tolist() == [(p.frame, p.span, p.pitch) for p in want]
        assert index_mod.postings(index, key).tolist() == [p.frame for p in want]
        assert lo == int(np.sum(keys < key))  # the range sits where the sorted keys put it


def test_directory_of_an_empty_index() -> None:
    empty = np.zeros(0, np.uint32)
    index = frozen(empty, empty, empty.astype(np.uint8), empty.astype(np.uint8))
    assert index.directory.shape == (2**params.HASH_BITS + 1,) and not index.directory.any()
    for key in (0, 12345, 2**params.HASH_BITS - 1):
        assert index_mod.postings(index, key).size == 0


# --- lookup -------------------------------------------------------------------------------------------


def assert_hits_equal(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    np.testing.assert_array_equal(got[0], want[0], err_msg="query triplet")
    np.testing.assert_array_equal(got[1], want[1], err_msg="reference frame")
    for name, g, w in zip(("log2 speed", "speed tolerance", "transposition"), got[2:], want[2:]):
        np.testing.assert_allclose(g, w, **FLOAT32_ULPS, err_msg=name)
        assert g.dtype == np.float32


@FEW
@given(
    n=st.integers(0, 2500),
    n_keys=st.integers(1, 120),
    n_query=st.integers(0, 40),
    max_postings=st.sampled_from([0, 1, 5, matcher.MAX_KEY_POSTINGS, 10**6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_lookup_random(n: int, n_keys: int, n_query: int, max_postings: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys, frames, spans, pitches = random_postings(rng, n, n_keys)
    index = frozen(keys, frames, spans, pitches)
    probe = query_keys(rng, keys, n_query)
    owner = rng.integers(0, max(n_query, 1), probe.size).astype(np.int64)
    query_dt3 = rng.uniform(0.6, 40, max(n_query, 1)).astype(np.float32)
    query_lf1 = rng.uniform(5.5, 12, max(n_query, 1)).astype(np.float32)
    got = matcher._lookup(probe, owner, query_dt3, query_lf1, index.directory, index.records, max_postings,
                          matcher.LOOKUP_CONFIG)  # fmt: skip
    want = naive.lookup(probe, owner, query_dt3, query_lf1, naive.postings_dict(keys, frames, spans, pitches),
                        max_postings)  # fmt: skip
    assert_hits_equal(got, want)


@FEW
@given(
    n=st.integers(0, 2500),
    n_keys=st.integers(1, 120),
    n_query=st.integers(0, 40),
    max_postings=st.sampled_from([0, 1, 5, matcher.MAX_KEY_POSTINGS, 10**6]),
    lo=st.integers(-10, 5010),
    width=st.integers(0, 6000),
    seed=st.integers(0, 2**32 - 1),
)
def test_lookup_within_random(n: int, n_keys: int, n_query: int, max_postings: int, lo: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys, frames, spans, pitches = random_postings(rng, n, n_keys)
    index = frozen(keys, frames, spans, pitches)
    probe = query_keys(rng, keys, n_query)
    owner = rng.integers(0, max(n_query, 1), probe.size).astype(np.int64)
    query_dt3 = rng.uniform(0.6, 40, max(n_query, 1)).astype(np.float32)
    query_lf1 = rng.uniform(5.5, 12, max(n_query, 1)).astype(np.float32)
    lo = max(lo, 0)
    got = matcher._lookup_within(probe, owner, query_dt3, query_lf1, index.directory, index.records, max_postings,
                                 lo, lo + width, matcher.LOOKUP_CONFIG)  # fmt: skip
    want = naive.lookup_within(probe, owner, query_dt3, query_lf1, naive.postings_dict(keys, frames, spans, pitches),
                               max_postings, lo, lo + width)  # fmt: skip
    assert_hits_equal(got, want)


# --- voting -------------------------------------------------------------------------------------------


def kernel_bins(keys: np.ndarray, votes: np.ndarray) -> dict[tuple[int, int], int]:
    """Decode ``h << 36 | (offset + 2**35)`` keys into {(h, offset): votes}."""
    out = {}
    for key, count in zip(keys.tolist(), votes.tolist()):
        out[(key >> 36, (key & (2**36 - 1)) - 2**35)] = count
    assert len(out) == keys.shape[0]  # no bin reported twice
    return out


def one_track_bins(
    log2_speed: np.ndarray, speed_tol: np.ndarray, frame: np.ndarray, rel_t: np.ndarray, step: float, steps: int, min_votes: int
) -> dict[tuple[int, int], int]:
    """``_track_vote_bins`` of hits that all belong to one track."""
    n = frame.shape[0]
    keys, votes, tracks = matcher._track_vote_bins(
        log2_speed, speed_tol, frame, rel_t, np.arange(n), np.array([0, n]), step, steps, min_votes, np.ones(1, bool)
    )
    assert np.all(tracks == 0)
    return kernel_bins(keys, votes)


def planted_hits(rng: np.random.Generator, n_true: int, n_noise: int, speed: float) -> tuple[np.ndarray, ...]:
    """Hits of a true match (frame = offset + speed * t, jittered) among random ones."""
    rel_t = np.concatenate((rng.integers(0, 400, n_true), rng.integers(0, 400, n_noise))).astype(np.float64)
    frame = np.concatenate(
        (np.rint(2000 + speed * rel_t[:n_true] + rng.integers(-1, 2, n_true)), rng.integers(0, 6000, n_noise))
    ).astype(np.float64)
    log2_speed = np.concatenate(
        (math.log2(speed) + rng.normal(0, 0.02, n_true), rng.uniform(-0.3, 0.3, n_noise))
    ).astype(np.float32)
    speed_tol = rng.uniform(params.SPEED_VOTE_OCT, params.SPEED_TOL_MAX_OCT, n_true + n_noise).astype(np.float32)
    return log2_speed, speed_tol, frame, rel_t


@FEW
@given(
    n_true=st.integers(0, 120),
    n_noise=st.integers(0, 300),
    speed=st.floats(0.88, 1.14),
    min_votes=st.integers(1, 8),
    grid=st.sampled_from([(params.SPEED_STEP_OCT, params.SPEED_STEPS), (0.01, 18), (0.05, 2)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_vote_bins_random(
    n_true: int, n_noise: int, speed: float, min_votes: int, grid: tuple[float, int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    log2_speed, speed_tol, frame, rel_t = planted_hits(rng, n_true, n_noise, speed)
    step, steps = grid
    got = one_track_bins(log2_speed, speed_tol, frame, rel_t, step, steps, min_votes)
    assert got == naive.vote_bins(log2_speed, speed_tol, frame, rel_t, step, steps, min_votes)


@FEW
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=40),
    min_votes=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_track_vote_bins_votes_track_by_track(sizes: list[int], min_votes: int, seed: int) -> None:
    """Each track's bins are the naive vote of its hits alone (tracks of up to 700 hits: tables past 1,024 slots)."""
    rng = np.random.default_rng(seed)
    columns = [planted_hits(rng, n // 2, n - n // 2, float(rng.uniform(0.9, 1.1))) for n in sizes]
    log2_speed, speed_tol, frame, rel_t = (np.concatenate(c) for c in zip(*columns))
    track = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(track.shape[0])
    order = order[np.argsort(track[order], kind="stable")]  # grouped by track, shuffled within
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    step, steps = params.SPEED_STEP_OCT, params.SPEED_STEPS
    everything = np.ones(len(sizes), bool)
    keys, votes, tracks = matcher._track_vote_bins(
        log2_speed, speed_tol, frame, rel_t, order, offsets, step, steps, min_votes, everything
    )
    assert np.all(np.diff(tracks) >= 0)  # track by track
    for t in range(len(sizes)):
        sub = order[offsets[t] : offsets[t + 1]]
        want = naive.vote_bins(log2_speed[sub], speed_tol[sub], frame[sub], rel_t[sub], step, steps, min_votes)
        assert kernel_bins(keys[tracks == t], votes[tracks == t]) == want


def tracks_of_hits(rng: np.random.Generator, sizes: list[int], true_share: float) -> tuple[np.ndarray, ...]:
    """Hits of consecutive 6,000-frame tracks (some planted alignment, some noise), grouped by track."""
    columns = [planted_hits(rng, int(n * true_share), n - int(n * true_share), float(rng.uniform(0.9, 1.1))) for n in sizes]
    log2_speed, speed_tol, frame, rel_t = (np.concatenate(c) for c in zip(*columns))
    track = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.arange(len(sizes) + 1, dtype=np.int64) * 6000
    frame = frame + starts[track]
    order = np.argsort(track, kind="stable")
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return log2_speed, speed_tol, frame, rel_t, order, offsets, starts


@FEW
@given(
    sizes=st.lists(st.integers(0, 200), min_size=1, max_size=30),
    true_share=st.sampled_from([0.0, 0.05, 0.5]),
    min_votes=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_reachable_tracks_keeps_every_track_that_can_fill_a_bin(sizes: list[int], true_share: float, min_votes: int, seed: int) -> None:
    """Kept: every track whose hits fit the bound's interval (so every track with a bin of min_votes); dropped: any
    track whose hits do not fit an interval one cell wider; the vote of the kept tracks is the vote of all."""
    rng = np.random.default_rng(seed)
    log2_speed, speed_tol, frame, rel_t, order, offsets, starts = tracks_of_hits(rng, sizes, true_share)
    step, steps = params.SPEED_STEP_OCT, params.SPEED_STEPS
    keep = matcher._reachable_tracks(frame, rel_t, order, offsets, starts, step, steps, min_votes)
    reach = max(2.0 ** (steps * step) - 1.0, 1.0 - 2.0 ** (-steps * step))
    cell = 4.0 + reach * (float(rel_t.max()) - float(rel_t.min())) if rel_t.size else 0.0
    for t in range(len(sizes)):
        sub = order[offsets[t] : offsets[t + 1]]
        if naive.reachable(frame[sub], rel_t[sub], step, steps, min_votes):
            assert keep[t]
        if not naive.reachable(frame[sub], rel_t[sub], step, steps, min_votes, slack=cell + 1.0):
            assert not keep[t]
        if naive.vote_bins(log2_speed[sub], speed_tol[sub], frame[sub], rel_t[sub], step, steps, min_votes):
            assert keep[t]
    voted = [
        matcher._track_vote_bins(log2_speed, speed_tol, frame, rel_t, order, offsets, step, steps, min_votes, k)
        for k in (keep, np.ones(len(sizes), bool))
    ]
    for a, b in zip(*voted):
        np.testing.assert_array_equal(a, b)


def test_reachable_tracks_drops_tracks_with_scattered_hits() -> None:
    """A 5 s window's hits in 200 tracks, 40 scattered over each and one with a planted alignment: few are voted."""
    rng = np.random.default_rng(5)
    sizes = [40] * 200
    log2_speed, speed_tol, frame, rel_t, order, offsets, starts = tracks_of_hits(rng, sizes, 0.0)
    rel_t = np.minimum(rel_t, 156.0)  # 5 s of query
    planted = order[offsets[7] : offsets[7] + 20]
    frame[planted] = starts[7] + 3000 + rel_t[planted]
    keep = matcher._reachable_tracks(frame, rel_t, order, offsets, starts, params.SPEED_STEP_OCT, params.SPEED_STEPS, 5)
    assert keep[7]
    assert keep.sum() <= 10


def test_vote_bins_count_offset_neighbours() -> None:
    """Three hits one frame apart at speed 1: the middle bin counts all three, the outer ones two."""
    frame = np.array([100.0, 101.0, 102.0])
    rel_t = np.zeros(3)
    log2_speed = np.zeros(3, np.float32)
    speed_tol = np.full(3, 0.1 * params.SPEED_STEP_OCT, np.float32)  # only the hypothesis at speed 1
    got = one_track_bins(log2_speed, speed_tol, frame, rel_t, params.SPEED_STEP_OCT, params.SPEED_STEPS, 1)
    h = params.SPEED_STEPS
    assert got == {(h, 100): 2, (h, 101): 3, (h, 102): 2}
    assert got == naive.vote_bins(log2_speed, speed_tol, frame, rel_t, params.SPEED_STEP_OCT, params.SPEED_STEPS, 1)


def test_vote_bins_of_real_hits(music_hits: tuple[np.ndarray, ...]) -> None:
    log2_speed, speed_tol, frame, rel_t = music_hits
    args = (log2_speed, speed_tol, frame, rel_t, params.SPEED_STEP_OCT, params.SPEED_STEPS, 3)
    want = naive.vote_bins(*args)
    assert one_track_bins(*args) == want
    assert max(want.values()) >= matcher.MIN_ALIGNED  # the true offset stands out


@pytest.fixture(scope="module")
def music_hits() -> tuple[np.ndarray, ...]:
    """Hits of a 6 s query cut from a 20 s reference, as the Matcher computes them."""
    reference = music(20.0, seed=21)
    builder = index_mod.IndexBuilder()
    builder.add("ref", landmarks.extract(reference), spectrum.n_frames_for(reference.shape[0]))
    found = landmarks.extract(reference[5 * SR : 11 * SR], QUERY)
    hits = matcher.Matcher(builder.freeze()).lookup(found)
    rel_t = (hits.t - found.t.min()).astype(np.float64)
    return hits.log2_speed, hits.speed_tol, hits.frame.astype(np.float64), rel_t


# --- alignment ----------------------------------------------------------------------------------------


def assert_alignment_equal(got: tuple, want: tuple) -> None:
    slope, intercept, shift, chosen = got
    np.testing.assert_array_equal(chosen, want[3])
    assert slope == pytest.approx(want[0], rel=1e-9)
    assert intercept == pytest.approx(want[1], rel=1e-9, abs=1e-6)
    assert shift == pytest.approx(want[2], abs=1e-6)


@FEW
@given(
    n_true=st.integers(0, 80),
    n_noise=st.integers(0, 200),
    speed=st.floats(0.9, 1.12),
    seed_error=st.floats(-1.0, 1.0),
    min_span_s=st.sampled_from([0.5, matcher.MIN_FIT_SPAN_S, 1000.0]),
    track=st.sampled_from([(0, 10**6), (0, 3000), (2500, 10**6)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_align_random(
    n_true: int, n_noise: int, speed: float, seed_error: float, min_span_s: float, track: tuple[int, int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    log2_speed, speed_tol, frame, rel_t = planted_hits(rng, n_true, n_noise, speed)
    frame = frame + rng.uniform(-0.3, 0.3, frame.size)  # off the integer grid: no hit exactly on a limit
    transposition = np.concatenate(
        (rng.normal(math.log2(speed), 0.01, n_true), rng.uniform(-0.3, 0.3, n_noise))
    ).astype(np.float32)
    seed_slope = 2.0 ** (round(math.log2(speed) / params.SPEED_STEP_OCT) * params.SPEED_STEP_OCT)
    args = (rel_t, frame, log2_speed, speed_tol, transposition, seed_slope, 2000.0 + seed_error, track[0], track[1],
            matcher.ALIGN_TOLERANCE, params.PITCH_TOL_OCT, min_span_s * params.FRAME_RATE)  # fmt: skip
    assert_alignment_equal(matcher._align(*args), naive.align(*args))


def test_align_fits_a_planted_line() -> None:
    """A check of both: 60 exact hits on frame = 1.05 t + 1234 among noise are found, slope and all."""
    rng = np.random.default_rng(5)
    log2_speed, speed_tol, frame, rel_t = planted_hits(rng, 0, 150, 1.0)
    true_t = np.arange(0, 300, 5, dtype=np.float64)
    rel_t = np.concatenate((true_t, rel_t))
    frame = np.concatenate((1234 + 1.05 * true_t, frame))
    log2_speed = np.concatenate((np.full(true_t.size, math.log2(1.05), np.float32), log2_speed))
    speed_tol = np.concatenate((np.full(true_t.size, params.SPEED_VOTE_OCT, np.float32), speed_tol))
    transposition = np.concatenate((np.full(true_t.size, 0.07, np.float32), rng.uniform(-0.3, 0.3, 150)))
    seed_slope = 2.0 ** (round(math.log2(1.05) / params.SPEED_STEP_OCT) * params.SPEED_STEP_OCT)  # its vote bin
    limits = (matcher.ALIGN_TOLERANCE, params.PITCH_TOL_OCT, matcher.MIN_FIT_SPAN_S * params.FRAME_RATE)
    transposition = transposition.astype(np.float32)
    args = (rel_t, frame, log2_speed, speed_tol, transposition, seed_slope, 1234.0, 0, 10**6, *limits)
    got = matcher._align(*args)
    assert_alignment_equal(got, naive.align(*args))
    slope, intercept, shift, chosen = got
    assert set(range(true_t.size)) <= set(chosen.tolist())
    assert slope == pytest.approx(1.05, abs=1e-3) and shift == pytest.approx(0.07, abs=1e-6)


# --- parameters reach the compiled kernels ------------------------------------------------------------


def test_kernels_follow_changed_params_despite_the_compile_cache() -> None:
    """Numba's cache=True freezes globals read from other modules and does not notice when they change.

    In a child process: run the hash and lookup kernels (compiled or loaded
    from the cache), shift parameter values, reload the modules (their
    kernels come back from the cache, the source being unchanged), and check
    the kernels against their twins, which read the shifted values.
    """
    code = textwrap.dedent(
        """
        import importlib
        import sys
        import numpy as np
        from fingerprint import hashes, index, matcher, params
        from fingerprint.landmarks import extract
        from fingerprint.synth import music
        warm = extract(music(3.0, seed=1))
        built = index.IndexBuilder()
        built.add("warm", warm, int(warm.t.max()) + 1)
        matcher.Matcher(built.freeze()).match(warm)  # hashes and looks up: every kernel is compiled and cached
        params.HASH_F1_BASE += 0.25
        params.HASH_DT3_BASE += 0.25
        params.HASH_DF_STEP *= 1.1
        params.HASH_R_STEP = 1.0 / 20.0
        params.PROBE_MARGIN_COARSE *= 0.5
        params.PITCH_BASE += 0.125
        params.SPEED_VOTE_OCT *= 2.0
        params.DT3_SCALE = 3.0
        sys.path.insert(0, sys.argv[1])
        import naive
        hashes, matcher = importlib.reload(hashes), importlib.reload(matcher)
        assert hashes.CONFIG.f1_base == params.HASH_F1_BASE  # the reload took the shifted values
        rng = np.random.default_rng(0)
        n = 300
        columns = tuple(c.astype(np.float32) for c in (
            rng.uniform(6, 11, n), rng.uniform(-1.5, 1.5, n), rng.uniform(-1.5, 1.5, n),
            rng.uniform(1, 16, n), rng.uniform(16, 33, n)))
        for probe in (False, True):
            got, want = hashes._hash_keys(*columns, probe, hashes.CONFIG), naive.hash_keys(*columns, probe)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), "hash keys"
        keys = hashes._hash_keys(*columns, False, hashes.CONFIG)[0]
        spans, pitches = rng.integers(0, 256, (2, n)).astype(np.uint8)
        frames = rng.integers(0, 1000, n).astype(np.uint32)
        built = index._freeze(keys, frames, spans, pitches, ("t",), np.array([0, 1000]))
        owner = np.arange(n)
        got = matcher._lookup(keys, owner, columns[4], columns[0], built.directory, built.records, 10**6,
                              matcher.LOOKUP_CONFIG)
        want = naive.lookup(keys, owner, columns[4], columns[0], naive.postings_dict(keys, frames, spans, pitches),
                            10**6)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), "hits"
        for g, w in zip(got[2:], want[2:]):
            np.testing.assert_allclose(g, w, rtol=4e-7, atol=1e-6)
        got = matcher._lookup_within(keys, owner, columns[4], columns[0], built.directory, built.records, 0, 0, 1000,
                                     matcher.LOOKUP_CONFIG)
        want = naive.lookup_within(keys, owner, columns[4], columns[0], naive.postings_dict(keys, frames, spans, pitches),
                                   0, 0, 1000)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), "hits within a recording"
        for g, w in zip(got[2:], want[2:]):
            np.testing.assert_allclose(g, w, rtol=4e-7, atol=1e-6)
        """
    )
    tests_dir = str(Path(__file__).resolve().parent)
    child = subprocess.run([sys.executable, "-c", code, tests_dir], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]


# --- grouping hits by track ------------------------------------------------------------------------------


@FEW
@given(
    lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    n=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_group_by_track_is_a_stable_sort_by_track(lengths: list[int], n: int, seed: int) -> None:
    """Twin: the track of a frame is the last start <= frame; hits keep their order within a track."""
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, starts[-1], n).astype(np.uint32)
    blocks = matcher.block_tracks(starts)
    order, offsets = matcher._group_by_track(frames, starts, blocks)
    track = np.searchsorted(starts, frames.astype(np.int64), side="right") - 1
    np.testing.assert_array_equal(order, np.argsort(track, kind="stable"))
    np.testing.assert_array_equal(offsets, np.concatenate(([0], np.cumsum(np.bincount(track, minlength=len(lengths))))))
    # the block table names a track only for blocks wholly inside it
    for b, t in enumerate(blocks):
        first = b << matcher.BLOCK_BITS
        last = min(first + (1 << matcher.BLOCK_BITS), int(starts[-1])) - 1
        owners = set((np.searchsorted(starts, [first, last], side="right") - 1).tolist())
        assert t == (owners.pop() if len(owners) == 1 else -1)

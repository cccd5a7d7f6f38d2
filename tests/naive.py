"""Slow, obviously correct twins of the engine's Numba kernels (after stumpy's ``tests/naive.py``).

Each function here restates one kernel's documented rule in the plainest
numpy or Python that does the job: no prefix sums, no sliding pointers, no
insertion sorts, no open addressing, no directories. ``tests/test_kernels.py``
checks every kernel against its twin. Parameter values always come from
``fingerprint.params`` (or are passed in), never from literals here, so the
twins stay valid while those values are tuned; the hash key's field widths
come from ``fingerprint.hashes``, the only layout constants shared.

Where a kernel's arithmetic is float32 by construction (its inputs are
float32 arrays), the twin does the same float32 step explicitly, so that the
discrete outputs (cells, keys, memberships) can be compared exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from fingerprint import hashes, matcher, params

# --- spectrum ----------------------------------------------------------------------------------------

LOG_FLOOR = 1e-10  # added to the power before the log (spectrum._log_power_frames)


def log_power_frames(
    samples: np.ndarray, n_frames: int, hop: int, bin_lo: int, bin_hi: int, n_fft: int = params.N_FFT
) -> np.ndarray:
    """log(|rfft(frame * periodic Hann)|^2 + 1e-10) of frames t*hop .. t*hop + n_fft, bins [bin_lo, bin_hi)."""
    window = np.hanning(n_fft + 1)[:n_fft]
    x = np.asarray(samples, np.float64)
    out = np.empty((n_frames, bin_hi - bin_lo), np.float64)
    for t in range(n_frames):
        spectrum = np.fft.rfft(x[t * hop : t * hop + n_fft] * window)
        out[t] = np.log(np.abs(spectrum) ** 2 + LOG_FLOOR)[bin_lo:bin_hi]
    return out


def n_frames_for(n_samples: int) -> int:
    """Complete frames of N_FFT samples, HOP apart, that fit in n_samples."""
    count = 0
    while count * params.HOP + params.N_FFT <= n_samples:
        count += 1
    return count


def log_spectrogram(samples: np.ndarray) -> np.ndarray:
    return log_power_frames(samples, n_frames_for(samples.shape[0]), params.HOP, params.BIN_LO, params.BIN_HI)


# --- peaks -------------------------------------------------------------------------------------------


def parabolic_offset(left: float, centre: float, right: float) -> float:
    """Vertex of the parabola through (-1, left), (0, centre), (1, right), clamped to +-0.5; 0 unless concave."""
    curvature = float(left) - 2.0 * float(centre) + float(right)
    if curvature >= 0.0:
        return 0.0
    # left - right in float32, as the kernel receives float32 spectrum cells
    vertex = 0.5 * float(np.float32(left) - np.float32(right)) / curvature
    return min(0.5, max(-0.5, vertex))


def local_peaks(
    spec: np.ndarray,
    first: int,
    last: int,
    peak_dt: int,
    peak_df: int,
    guard: int,
    contrast_df: int,
    silence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Twin of landmarks._local_peaks: (t, f, contrast, t_frac, f_frac) in raster order.

    A cell of rows [first, last), outside the guard band of ``guard`` bins on
    each side, above ``silence``, is a peak when it is strictly greater than
    every existing neighbour that comes earlier in raster order within +-peak_dt
    rows and +-peak_df bins, and at least equal to every later one.
    """
    n_rows, n_bins = spec.shape
    # Neighbours outside the array do not exist: pad with -inf, which never wins.
    padded = np.full((n_rows + 2 * peak_dt, n_bins + 2 * peak_df), -np.inf, np.float64)
    padded[peak_dt : peak_dt + n_rows, peak_df : peak_df + n_bins] = spec
    value = spec.astype(np.float64)
    rows = np.arange(n_rows)[:, None]
    cols = np.arange(n_bins)[None, :]
    is_peak = (value > silence) & (rows >= first) & (rows < last) & (cols >= guard) & (cols < n_bins - guard)
    for dt in range(-peak_dt, peak_dt + 1):
        for df in range(-peak_df, peak_df + 1):
            if dt == 0 and df == 0:
                continue
            neighbour = padded[peak_dt + dt : peak_dt + dt + n_rows, peak_df + df : peak_df + df + n_bins]
            earlier = (dt, df) < (0, 0)
            is_peak &= (value > neighbour) if earlier else (value >= neighbour)
    out_t, out_f, out_c, out_tf, out_ff = [], [], [], [], []
    for t, f in np.argwhere(is_peak):  # row-major: ordered by (t, f)
        lo, hi = max(0, f - contrast_df), min(n_bins, f + contrast_df + 1)
        mean = float(np.mean(spec[t, lo:hi].astype(np.float64)))
        t_frac = parabolic_offset(spec[t - 1, f], spec[t, f], spec[t + 1, f]) if 0 < t < n_rows - 1 else 0.0
        f_frac = parabolic_offset(spec[t, f - 1], spec[t, f], spec[t, f + 1]) if 0 < f < n_bins - 1 else 0.0
        out_t.append(t)
        out_f.append(f)
        out_c.append(float(spec[t, f]) - mean)
        out_tf.append(t_frac)
        out_ff.append(f_frac)
    return (
        np.array(out_t, np.int64),
        np.array(out_f, np.int32),
        np.array(out_c, np.float32),
        np.array(out_tf, np.float32),
        np.array(out_ff, np.float32),
    )


def band_of_bin(n_bins: int = params.N_BINS) -> np.ndarray:
    """Band of each analysis bin as documented: PEAK_BAND_EDGES_HZ delimit len(edges) - 1 bands.

    Bins below the first edge belong to the lowest band, bins at or above the
    last edge to the highest one.
    """
    edges = params.PEAK_BAND_EDGES_HZ
    n_bands = len(edges) - 1
    out = np.empty(n_bins, np.int32)
    for k in range(n_bins):
        hz = (params.BIN_LO + k) * params.BIN_HZ
        band = 0
        for b in range(n_bands):
            if hz >= edges[b]:
                band = b
        out[k] = band
    return out


def select_top(
    t: np.ndarray,
    f: np.ndarray,
    contrast: np.ndarray,
    band_of_bin: np.ndarray,
    first: int,
    last: int,
    window: int,
    top_k: np.ndarray,
) -> np.ndarray:
    """Twin of landmarks._select_top: candidates i in [first, last) with fewer than top_k[band] rivals.

    A rival of i is another candidate of the same band within +-window frames
    with a higher contrast, or an equal contrast and an earlier position.
    """
    t = np.asarray(t, np.int64)
    band = band_of_bin[f]
    keep = []
    for i in range(first, last):
        position = np.arange(t.shape[0])
        rivals = (
            (np.abs(t - t[i]) <= window)
            & (band == band[i])
            & ((contrast > contrast[i]) | ((contrast == contrast[i]) & (position < i)))
        )
        if int(rivals.sum()) < top_k[band[i]]:
            keep.append(i)
    return np.array(keep, np.int64)


# --- triplets ----------------------------------------------------------------------------------------


def triplet_indices(
    t: np.ndarray,
    lf: np.ndarray,
    contrast: np.ndarray,
    first: int,
    last: int,
    dt_min: int,
    dt_max: int,
    df_oct: float,
    targets: int,
    max_triplets: int,
    monotone_oct: float,
) -> list[tuple[int, int, int]]:
    """(anchor, target 2, target 3) peak indices, in the kernel's output order.

    The zone of anchor i: every other peak j with t[j] - t[i] in [dt_min, dt_max]
    and |lf[j] - lf[i]| <= df_oct. The ``targets`` strongest by contrast are
    chosen (ties to the earlier peak); their pairs are taken strongest first,
    (1st, 2nd), (1st, 3rd), (2nd, 3rd), (1st, 4th), ..., at most
    ``max_triplets`` of them, each pair's targets in peak (time) order;
    monotone pairs (both targets within ``monotone_oct`` of the anchor) are
    skipped and do not count.
    """
    out = []
    for i in range(first, last):
        zone = [
            j
            for j in range(t.shape[0])
            if j != i and dt_min <= t[j] - t[i] <= dt_max and abs(np.float32(lf[j]) - np.float32(lf[i])) <= df_oct
        ]
        strongest = sorted(zone, key=lambda j: (-float(contrast[j]), j))[:targets]
        pairs = [(strongest[a], strongest[b]) for b in range(len(strongest)) for a in range(b)]

        def monotone(j: int) -> bool:
            return bool(abs(np.float32(lf[j]) - np.float32(lf[i])) < monotone_oct)

        pairs = [(j, k) for j, k in pairs if not (monotone(j) and monotone(k))]
        for j, k in pairs[: max(max_triplets, 0)]:
            out.append((i, min(j, k), max(j, k)))
    return out


def triplets(
    t: np.ndarray,
    t_frac: np.ndarray,
    lf: np.ndarray,
    contrast: np.ndarray,
    first: int,
    last: int,
    dt_min: int,
    dt_max: int,
    df_oct: float,
    targets: int,
    max_triplets: int,
    monotone_oct: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Twin of landmarks._triplets: the columns (t, lf1, dlf2, dlf3, dt2, dt3) of triplet_indices."""
    lf = np.asarray(lf, np.float32)
    t_frac = np.asarray(t_frac, np.float32)

    def span(i: int, j: int) -> float:
        return float(t[j] - t[i]) + float(t_frac[j] - t_frac[i])  # the fraction difference is float32

    # targets in order of sub-frame time (so dt3 >= dt2 even when both share a frame)
    rows = [
        (i, k, j) if span(k, j) > 0.0 else (i, j, k)
        for i, j, k in triplet_indices(
            t, lf, contrast, first, last, dt_min, dt_max, df_oct, targets, max_triplets, monotone_oct
        )
    ]

    return (
        np.array([t[i] for i, _, _ in rows], np.int64),
        np.array([lf[i] for i, _, _ in rows], np.float32),
        np.array([lf[j] - lf[i] for i, j, _ in rows], np.float32),
        np.array([lf[k] - lf[i] for i, _, k in rows], np.float32),
        np.array([span(i, j) for i, j, _ in rows], np.float32),
        np.array([span(i, k) for i, _, k in rows], np.float32),
    )


# --- hashing -----------------------------------------------------------------------------------------


def cell_and_probe(value: float, step: float, top: int, margin: float) -> tuple[int, int | None]:
    """Cell floor(value / step) clamped to [0, top], and the cell beyond the nearer edge when within margin of it.

    ``margin`` is in the units of ``value``.
    """
    cell = math.floor(value / step)
    clamped = min(max(cell, 0), top)
    above_lower_edge = (value / step - cell) * step
    probe = None
    if clamped != cell:
        return clamped, None  # beyond the last cell: nothing lies further out
    if above_lower_edge <= step / 2:
        if above_lower_edge < margin and clamped > 0:
            probe = clamped - 1
    elif step - above_lower_edge < margin and clamped < top:
        probe = clamped + 1
    return clamped, probe


def mix(raw: int) -> int:
    """Multiplicative (Fibonacci) hash of the raw field layout, keeping the top HASH_BITS of 32."""
    return ((raw * 0x9E3779B1) % 2**32) // 2 ** (32 - params.HASH_BITS)


def log2_frequency_jitter(lf: float) -> float:
    """Standard deviation of a peak's log2 frequency: FREQ_JITTER_BINS bins at 2**lf Hz."""
    bins = 2.0**lf / params.BIN_HZ
    return params.FREQ_JITTER_BINS / (bins * math.log(2.0))


def hash_keys(
    lf1: np.ndarray,
    dlf2: np.ndarray,
    dlf3: np.ndarray,
    dt2: np.ndarray,
    dt3: np.ndarray,
    probe: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Twin of hashes._hash_keys: (keys, owner), each triplet's keys in (dlf2, dlf3, r, f1, dt3) probe order.

    Fields: the octave differences dlf2, dlf3 in HASH_DF_STEP cells, signed
    around the middle of their 7-bit field; the ratio r = dt2 / dt3 in
    HASH_R_STEP cells; the anchor's log2 frequency above HASH_F1_BASE and
    log2 dt3 above HASH_DT3_BASE in HASH_COARSE_STEP cells; each clamped to its
    field. When probing, a field also takes the cell beyond its nearer edge
    when within a margin of it: PROBE_MARGIN_COARSE cells for the coarse
    fields, PROBE_SIGMAS standard deviations of the measurement jitter for the
    fine ones (frequency jitters of the two peaks, or time jitters of the two
    spans, combined in quadrature).
    """
    df_bits, r_bits, coarse_bits = hashes._DF_BITS, hashes._R_BITS, hashes._COARSE_BITS
    df_top, coarse_top = 2**df_bits - 1, 2**coarse_bits - 1
    df_middle = 2 ** (df_bits - 1) * params.HASH_DF_STEP
    r_top = min(round(1.0 / params.HASH_R_STEP), 2**r_bits) - 1
    keys, owner = [], []
    for i in range(len(lf1)):
        ratio = float(np.float32(dt2[i]) / np.float32(dt3[i]))  # float32 inputs, float32 quotient
        # log2 of the float32 span, rounded to float32 (as the kernel's float32 log2 does, to an ulp)
        log_span = float(np.float32(math.log2(float(dt3[i]))))
        m2 = m3 = mr = coarse = 0.0
        if probe:
            own = log2_frequency_jitter(float(lf1[i]))
            m2 = params.PROBE_SIGMAS * math.hypot(own, log2_frequency_jitter(float(lf1[i]) + float(dlf2[i])))
            m3 = params.PROBE_SIGMAS * math.hypot(own, log2_frequency_jitter(float(lf1[i]) + float(dlf3[i])))
            mr = params.PROBE_SIGMAS * params.TIME_JITTER_FRAMES * math.hypot(1.0, ratio) / float(dt3[i])
            coarse = params.PROBE_MARGIN_COARSE * params.HASH_COARSE_STEP
        d2_cells = cell_and_probe(float(dlf2[i]) + df_middle, params.HASH_DF_STEP, df_top, m2)
        d3_cells = cell_and_probe(float(dlf3[i]) + df_middle, params.HASH_DF_STEP, df_top, m3)
        r_cells = cell_and_probe(ratio, params.HASH_R_STEP, r_top, mr)
        f_cells = cell_and_probe(float(lf1[i]) - params.HASH_F1_BASE, params.HASH_COARSE_STEP, coarse_top, coarse)
        s_cells = cell_and_probe(log_span - params.HASH_DT3_BASE, params.HASH_COARSE_STEP, coarse_top, coarse)
        for qd2 in d2_cells:
            for qd3 in d3_cells:
                for qr in r_cells:
                    for qf in f_cells:
                        for qs in s_cells:
                            if None in (qd2, qd3, qr, qf, qs):
                                continue
                            raw = (
                                qd2
                                + qd3 * 2**df_bits
                                + qr * 2 ** (2 * df_bits)
                                + qf * 2 ** (2 * df_bits + r_bits)
                                + qs * 2 ** (2 * df_bits + r_bits + coarse_bits)
                            )
                            keys.append(mix(raw))
                            owner.append(i)
    return np.array(keys, np.uint32), np.array(owner, np.int64)


# --- index -------------------------------------------------------------------------------------------


class Posting:
    __slots__ = ("frame", "span", "pitch")

    def __init__(self, frame: int, span: int, pitch: int) -> None:
        self.frame, self.span, self.pitch = frame, span, pitch


def postings_dict(
    keys: Sequence[int], frames: Sequence[int], spans: Sequence[int], pitches: Sequence[int]
) -> dict[int, list[Posting]]:
    """key -> its postings sorted by frame (ties keep insertion order), from the raw (unsorted) postings."""
    table: dict[int, list[Posting]] = {}
    for key, frame, span, pitch in zip(keys, frames, spans, pitches):
        table.setdefault(int(key), []).append(Posting(int(frame), int(span), int(pitch)))
    for entries in table.values():
        entries.sort(key=lambda p: p.frame)  # stable
    return table


def lookup(
    keys: np.ndarray,
    owner: np.ndarray,
    query_dt3: np.ndarray,
    query_lf1: np.ndarray,
    table: dict[int, list[Posting]],
    max_postings: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Twin of matcher._lookup: (query triplet, frame, log2 speed, its tolerance, transposition) per hit.

    Keys with more than max_postings postings are skipped. A hit's speed is
    (reference span, from its quarter-frame byte, at least one) / (query span);
    its tolerance SPEED_VOTE_OCT + SPAN_JITTER / (query span * ln 2), capped at
    SPEED_TOL_MAX_OCT; its transposition the query's anchor log2 frequency minus
    the reference's, dequantised. Keys are visited in order of their
    group (key >> VISIT_SHIFT), keeping their order within a group.
    """
    visit = sorted(range(len(keys)), key=lambda k: (int(keys[k]) >> matcher.VISIT_SHIFT, k))
    chosen = [(k, entries) for k in visit if len(entries := table.get(int(keys[k]), [])) <= max_postings]
    return _hit_columns(chosen, owner, query_dt3, query_lf1)


def lookup_within(
    keys: np.ndarray,
    owner: np.ndarray,
    query_dt3: np.ndarray,
    query_lf1: np.ndarray,
    table: dict[int, list[Posting]],
    max_postings: int,
    lo: int,
    hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Twin of matcher._lookup_within: the hits ``lookup`` skips (keys with more than max_postings), frames in [lo, hi), keys in query order."""
    chosen = []
    for k in range(len(keys)):
        entries = table.get(int(keys[k]), [])
        if len(entries) > max_postings:
            chosen.append((k, [p for p in entries if lo <= p.frame < hi]))
    return _hit_columns(chosen, owner, query_dt3, query_lf1)


def _hit_columns(
    chosen: list[tuple[int, list[Posting]]], owner: np.ndarray, query_dt3: np.ndarray, query_lf1: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The hit columns of the postings chosen for each query key (k, its postings)."""
    out_i, out_f, out_s, out_tol, out_p = [], [], [], [], []
    for k, entries in chosen:
        i = owner[k]
        query_span = float(query_dt3[i])
        tol = min(params.SPEED_VOTE_OCT + params.SPAN_JITTER / (query_span * math.log(2.0)), params.SPEED_TOL_MAX_OCT)
        for p in entries:
            reference_span = max(p.span, 1) / params.DT3_SCALE
            out_i.append(i)
            out_f.append(p.frame)
            out_s.append(math.log2(reference_span / query_span))
            out_tol.append(tol)
            out_p.append(float(query_lf1[i]) - (params.PITCH_BASE + p.pitch * params.PITCH_STEP))
    return (
        np.array(out_i, np.int64),
        np.array(out_f, np.uint32),
        np.array(out_s, np.float32),
        np.array(out_tol, np.float32),
        np.array(out_p, np.float32),
    )


# --- voting ------------------------------------------------------------------------------------------


def vote_bins(
    log2_speed: np.ndarray,
    speed_tol: np.ndarray,
    frame: np.ndarray,
    rel_t: np.ndarray,
    step: float,
    steps: int,
    min_votes: int,
) -> dict[tuple[int, int], int]:
    """Twin of matcher._track_vote_bins for one track: {(hypothesis, offset): votes counting offsets +-1} with >= min_votes.

    Hit k votes for each hypothesis h in [0, 2*steps] whose log2 speed
    (h - steps) * step lies within speed_tol[k] of log2_speed[k], at the offset
    round(frame - speed * rel_t) (halves round up).
    """
    counts: Counter[tuple[int, int]] = Counter()
    for k in range(len(frame)):
        low = float(np.float32(log2_speed[k]) - np.float32(speed_tol[k]))  # float32 columns
        high = float(np.float32(log2_speed[k]) + np.float32(speed_tol[k]))
        for h in range(0, 2 * steps + 1):
            if not (math.ceil(low / step) <= h - steps <= math.floor(high / step)):
                continue
            speed = 2.0 ** ((h - steps) * step)
            offset = math.floor(float(frame[k]) - speed * float(rel_t[k]) + 0.5)
            counts[(h, offset)] += 1
    out = {}
    for (h, offset), count in counts.items():
        votes = count + counts.get((h, offset - 1), 0) + counts.get((h, offset + 1), 0)
        if votes >= min_votes:
            out[(h, offset)] = votes
    return out


def reachable(frame: np.ndarray, rel_t: np.ndarray, step: float, steps: int, min_votes: int, slack: float = 0.0) -> bool:
    """Bound of matcher._reachable_tracks for one track: do ``min_votes`` of its hits have u = frame - rel_t
    within an interval of 3 + |s - 1| * (range of rel_t) frames, s the most extreme speed hypothesis?

    Every bin of ``vote_bins`` with ``min_votes`` lies in such an interval; the
    kernel's cells may also keep a track whose hits only fit an interval
    ``slack`` frames wider (two cells of its width).
    """
    if len(frame) < min_votes or min_votes < 1:
        return len(frame) >= min_votes
    reach = max(2.0 ** (steps * step) - 1.0, 1.0 - 2.0 ** (-steps * step))
    width = 3.0 + reach * (float(np.max(rel_t)) - float(np.min(rel_t))) + slack
    u = np.sort(np.asarray(frame, np.float64) - np.asarray(rel_t, np.float64))
    return bool(np.any(u[min_votes - 1 :] - u[: len(u) - min_votes + 1] <= width))


def align(
    rel_t: np.ndarray,
    frame: np.ndarray,
    log2_speed: np.ndarray,
    speed_tol: np.ndarray,
    transposition: np.ndarray,
    seed_slope: float,
    seed_offset: float,
    lo: int,
    hi: int,
    tolerance: float,
    pitch_tol: float,
    min_span: float,
) -> tuple[float, float, float, np.ndarray]:
    """Twin of matcher._align: three passes over the hits, two least-squares refits.

    Pass 0 keeps the hits in [lo, hi) whose speed estimate is within their
    tolerance of the line's slope and that lie within tolerance + 0.5 frames of
    the seed line. After each of passes 0 and 1: the transposition is the median
    over the kept hits, and the line is refitted (the slope only with at least 8
    hits spanning min_span query frames, the intercept always). Passes 1 and 2
    use the plain tolerance and also require the transposition within pitch_tol.
    Stops early when a pass keeps nothing.
    """
    slope, intercept, shift = float(seed_slope), float(seed_offset), 0.0
    kept: list[int] = []
    for rnd in range(3):
        limit = tolerance + 0.5 if rnd == 0 else tolerance
        log2_slope = math.log2(slope) if slope > 0 else math.nan  # no speed agrees with a non-positive slope
        kept = [
            k
            for k in range(len(frame))
            if lo <= frame[k] < hi
            and abs(float(log2_speed[k]) - log2_slope) <= float(speed_tol[k])
            and abs(float(frame[k]) - slope * float(rel_t[k]) - intercept) <= limit
            and (rnd == 0 or abs(float(transposition[k]) - shift) <= pitch_tol)
        ]
        if not kept or rnd == 2:
            break
        shift = float(np.median(np.asarray(transposition)[kept]))
        x = np.asarray(rel_t, np.float64)[kept]
        y = np.asarray(frame, np.float64)[kept]
        if len(kept) >= 8 and x.max() - x.min() >= min_span and np.var(x) > 0:
            slope = float(np.polyfit(x, y, 1)[0])
        intercept = float(np.mean(y - slope * x))
    return slope, intercept, shift, np.array(kept, np.int64)

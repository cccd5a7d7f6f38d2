"""Spectral-peak landmarks, batch and streaming.

Pipeline, each stage a small Numba kernel (``nogil``):

1. log power spectrogram (``fingerprint.spectrum``);
2. ``_local_peaks``: local maxima over +-PEAK_DT frames x +-PEAK_DF bins (a
   live stream: +-LIVE_PEAK_DF bins), with their spectral contrast and a
   parabolic sub-frame / sub-bin position;
3. ``_select_top``: keep a candidate when it ranks among the PEAK_TOP_K highest
   contrasts of its frequency band (a quota per band) within +-PEAK_WINDOW
   frames (a sliding rank keeps the density fixed and is translation
   invariant, unlike fixed blocks);
4. ``_triplets``: each anchor peak takes the TARGETS strongest peaks of its
   target zone and forms triplets with pairs of them, strongest pairs first
   (the reference keeps MAX_TRIPLETS of them, the query all).

A landmark is not a hash: it keeps the anchor frame and the continuous
coordinates of the triplet, so that hashing (``fingerprint.hashes``) can
choose what to quantise and how coarsely, and the matcher can estimate each
hit's speed from the continuous spans.

Every stage depends only on a bounded neighbourhood, so ``Extractor`` can emit
each landmark as soon as its neighbourhood has been seen, and a stream fed in
chunks of any size yields exactly the landmarks of the whole signal.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numba
import numpy as np

from fingerprint.params import (
    BIN_HZ,
    BIN_LO,
    CONTRAST_DF,
    FASTMATH,
    HOP,
    LIVE_PEAK_DF,
    LIVE_TARGETS,
    N_BINS,
    N_FFT,
    PEAK_BAND_EDGES_HZ,
    PEAK_DF,
    PEAK_DT,
    PEAK_TOP_K,
    QUERY_PEAK_TOP_K,
    QUERY_TARGETS,
    PEAK_WINDOW,
    SILENCE_LOG_POWER,
    MAX_TRIPLETS,
    MONOTONE_OCT,
    TARGETS,
    ZONE_DF_OCT,
    ZONE_DT_MAX,
    ZONE_DT_MIN,
)
from fingerprint.spectrum import check_samples, log_spectrogram, n_frames_for


class Landmarks(NamedTuple):
    """Peak triplets (anchor, target 2, target 3) as parallel arrays, ordered by anchor frame."""

    t: np.ndarray  # int64: anchor frame (frame = HOP samples from stream start)
    lf1: np.ndarray  # float32: log2 of the anchor frequency in Hz
    dlf2: np.ndarray  # float32: log2(f2 / f1), octaves
    dlf3: np.ndarray  # float32: log2(f3 / f1), octaves
    dt2: np.ndarray  # float32: t2 - t1, frames (sub-frame precision)
    dt3: np.ndarray  # float32: t3 - t1, frames; dt3 >= dt2 > 0

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.t.shape[0])

    @staticmethod
    def empty() -> "Landmarks":
        return Landmarks(np.empty(0, np.int64), *(np.empty(0, np.float32) for _ in range(5)))

    def take(self, index: np.ndarray | slice) -> "Landmarks":
        return Landmarks(*(column[index] for column in self))

    @staticmethod
    def concat(parts: "list[Landmarks]") -> "Landmarks":
        if not parts:
            return Landmarks.empty()
        return Landmarks(*(np.concatenate(column) for column in zip(*parts)))


class Peaks(NamedTuple):
    """Spectral peaks as parallel arrays, ordered by (frame, bin)."""

    t: np.ndarray  # int64 frame
    f: np.ndarray  # int32 bin index within the analysis band
    contrast: np.ndarray  # float32 log power above the local spectral mean
    t_frac: np.ndarray  # float32 sub-frame offset in [-0.5, 0.5]
    f_frac: np.ndarray  # float32 sub-bin offset in [-0.5, 0.5]

    @staticmethod
    def empty() -> "Peaks":
        return Peaks(
            np.empty(0, np.int64),
            np.empty(0, np.int32),
            np.empty(0, np.float32),
            np.empty(0, np.float32),
            np.empty(0, np.float32),
        )

    def take(self, index: np.ndarray | slice) -> "Peaks":
        return Peaks(*(column[index] for column in self))

    @staticmethod
    def concat(parts: "list[Peaks]") -> "Peaks":
        if not parts:
            return Peaks.empty()
        return Peaks(*(np.concatenate(column) for column in zip(*parts)))


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _parabolic_offset(left: float, centre: float, right: float) -> float:
    """Vertex offset of the parabola through three equally spaced points."""
    denom = left - 2.0 * centre + right
    if denom >= 0.0:
        return 0.0
    offset = 0.5 * (left - right) / denom
    if offset > 0.5:
        return 0.5
    if offset < -0.5:
        return -0.5
    return offset


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _local_peaks(
    spec: np.ndarray,
    first: int,
    last: int,
    peak_dt: int,
    peak_df: int,
    guard: int,
    contrast_df: int,
    silence: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of ``spec`` over +-peak_dt rows x +-peak_df bins in rows [first, last); rows outside ``spec`` do not exist.

    The first and last ``guard`` bins are a guard band: compared against,
    never peaks themselves. Ties are broken in raster order (a cell must be strictly greater than its
    earlier neighbours and at least equal to its later ones), so a flat region
    gives at most one maximum.
    """
    n_rows, n_bins = spec.shape
    cap = (last - first) * (n_bins // (peak_df + 1) + 1)
    out_t = np.empty(cap, np.int64)
    out_f = np.empty(cap, np.int32)
    out_c = np.empty(cap, np.float32)
    out_tf = np.empty(cap, np.float32)
    out_ff = np.empty(cap, np.float32)
    prefix = np.empty(n_bins + 1, np.float64)
    count = 0
    for t in range(first, last):
        row_has_prefix = False
        for f in range(guard, n_bins - guard):
            v = spec[t, f]
            if not v > silence:  # also skips NaN, which would compare as a peak everywhere
                continue
            is_peak = True
            for dt in range(-peak_dt, peak_dt + 1):
                tt = t + dt
                if tt < 0 or tt >= n_rows:
                    continue
                for df in range(-peak_df, peak_df + 1):
                    ff = f + df
                    if ff < 0 or ff >= n_bins or (dt == 0 and df == 0):
                        continue
                    w = spec[tt, ff]
                    earlier = dt < 0 or (dt == 0 and df < 0)
                    if w > v or (earlier and w == v):
                        is_peak = False
                        break
                if not is_peak:
                    break
            if not is_peak:
                continue
            if not row_has_prefix:
                prefix[0] = 0.0
                for k in range(n_bins):
                    prefix[k + 1] = prefix[k] + spec[t, k]
                row_has_prefix = True
            lo = max(0, f - contrast_df)
            hi = min(n_bins, f + contrast_df + 1)
            mean = (prefix[hi] - prefix[lo]) / (hi - lo)
            t_frac = 0.0
            if t - 1 >= 0 and t + 1 < n_rows:
                t_frac = _parabolic_offset(spec[t - 1, f], v, spec[t + 1, f])
            f_frac = 0.0
            if f - 1 >= 0 and f + 1 < n_bins:
                f_frac = _parabolic_offset(spec[t, f - 1], v, spec[t, f + 1])
            out_t[count] = t
            out_f[count] = f
            out_c[count] = v - mean
            out_tf[count] = t_frac
            out_ff[count] = f_frac
            count += 1
    return out_t[:count], out_f[:count], out_c[:count], out_tf[:count], out_ff[:count]


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _select_top(
    t: np.ndarray,
    f: np.ndarray,
    contrast: np.ndarray,
    band_of_bin: np.ndarray,
    first: int,
    last: int,
    window: int,
    top_k: np.ndarray,
) -> np.ndarray:
    """Indices in [first, last) of candidates among the top_k[band] contrasts of their band within +-window frames.

    Candidates are sorted by (t, f); ties in contrast go to the earlier one.
    """
    n = t.shape[0]
    keep = np.empty(last - first, np.int64)
    count = 0
    lo = 0
    for i in range(first, last):
        while t[lo] < t[i] - window:
            lo += 1
        band = band_of_bin[f[i]]
        quota = top_k[band]
        better = 0
        j = lo
        while j < n and t[j] <= t[i] + window:
            if band_of_bin[f[j]] == band and (
                contrast[j] > contrast[i] or (contrast[j] == contrast[i] and j < i)
            ):
                better += 1
                if better >= quota:
                    break
            j += 1
        if better < quota:
            keep[count] = i
            count += 1
    return keep[:count]


def _band_of_bin() -> np.ndarray:
    hz = (BIN_LO + np.arange(N_BINS)) * BIN_HZ
    edges = np.asarray(PEAK_BAND_EDGES_HZ)
    band = np.searchsorted(edges, hz, side="right") - 1
    return np.clip(band, 0, edges.shape[0] - 2).astype(np.int32)


_BAND_OF_BIN = _band_of_bin()


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _triplets(
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
    """Triplets of each anchor in [first, last) with pairs of its ``targets`` strongest zone peaks.

    The zone of anchor i holds the peaks j with t[j] - t[i] in [dt_min, dt_max]
    and |lf[j] - lf[i]| <= df_oct. Ties in contrast go to the earlier peak.
    Pairs are taken strongest first, (1st, 2nd), (1st, 3rd), (2nd, 3rd),
    (1st, 4th), ..., up to ``max_triplets`` per anchor, skipping monotone
    triplets (both targets within ``monotone_oct`` of the anchor's frequency:
    a note repeated in rhythm, which unrelated songs share). Peaks are sorted by
    (t, f); ``t_frac`` is the sub-frame offset and ``lf`` the log2 frequency.
    """
    n = t.shape[0]
    per_anchor = min(max_triplets, targets * (targets - 1) // 2)
    cap = (last - first) * per_anchor
    out_t = np.empty(cap, np.int64)
    out_lf1 = np.empty(cap, np.float32)
    out_dlf2 = np.empty(cap, np.float32)
    out_dlf3 = np.empty(cap, np.float32)
    out_dt2 = np.empty(cap, np.float32)
    out_dt3 = np.empty(cap, np.float32)
    chosen = np.empty(targets, np.int64)
    count = 0
    for i in range(first, last):
        n_chosen = 0
        j = i + 1
        while j < n and t[j] - t[i] <= dt_max:
            if t[j] - t[i] >= dt_min and abs(lf[j] - lf[i]) <= df_oct:
                # insert j into the strongest-first list ``chosen``
                pos = n_chosen
                while pos > 0 and contrast[chosen[pos - 1]] < contrast[j]:
                    pos -= 1
                if pos < targets:
                    end = min(n_chosen, targets - 1)
                    for q in range(end, pos, -1):
                        chosen[q] = chosen[q - 1]
                    chosen[pos] = j
                    if n_chosen < targets:
                        n_chosen += 1
            j += 1
        emitted = 0
        for b in range(1, n_chosen):
            for a in range(b):
                if emitted == per_anchor:
                    break
                j, k = min(chosen[a], chosen[b]), max(chosen[a], chosen[b])
                if abs(lf[j] - lf[i]) < monotone_oct and abs(lf[k] - lf[i]) < monotone_oct:
                    continue
                emitted += 1
                # order the targets by sub-frame time, so that dt3 >= dt2 even
                # when both sit in one frame (index order breaks exact ties)
                if float(t[j] - t[k]) + (t_frac[j] - t_frac[k]) > 0.0:
                    j, k = k, j
                out_t[count] = t[i]
                out_lf1[count] = lf[i]
                out_dlf2[count] = lf[j] - lf[i]
                out_dlf3[count] = lf[k] - lf[i]
                out_dt2[count] = float(t[j] - t[i]) + (t_frac[j] - t_frac[i])
                out_dt3[count] = float(t[k] - t[i]) + (t_frac[k] - t_frac[i])
                count += 1
    return out_t[:count], out_lf1[:count], out_dlf2[:count], out_dlf3[:count], out_dt2[:count], out_dt3[:count]


def _log2_hz(peaks: Peaks) -> np.ndarray:
    return np.log2((BIN_LO + peaks.f + peaks.f_frac.astype(np.float64)) * BIN_HZ).astype(np.float32)


class Density(NamedTuple):
    """How many peaks (per band and window, one quota per band) and targets (per anchor) to take, and over what neighbourhood a peak is a maximum."""

    top_k: tuple[int, ...]
    targets: int
    max_triplets: int
    peak_df: int = PEAK_DF  # a peak is a local maximum over +-peak_df bins (the guard band stays PEAK_DF bins)

    def quotas(self) -> np.ndarray:
        """``top_k`` as the array ``_select_top`` takes, checked against the bands (and ``peak_df`` against the guard band)."""
        if len(self.top_k) != len(PEAK_BAND_EDGES_HZ) - 1:
            raise ValueError(f"expected one peak quota per band ({len(PEAK_BAND_EDGES_HZ) - 1}), got {self.top_k}")
        if not 1 <= self.peak_df <= PEAK_DF:
            raise ValueError(f"peak_df must be 1 to {PEAK_DF} bins (the spectrogram's guard band), got {self.peak_df}")
        return np.asarray(self.top_k, np.int64)


REFERENCE = Density(PEAK_TOP_K, TARGETS, MAX_TRIPLETS)
QUERY = Density(QUERY_PEAK_TOP_K, QUERY_TARGETS, QUERY_TARGETS * (QUERY_TARGETS - 1) // 2)
LIVE = Density(QUERY_PEAK_TOP_K, LIVE_TARGETS, LIVE_TARGETS * (LIVE_TARGETS - 1) // 2, LIVE_PEAK_DF)


class Extractor:
    """Streaming landmark extractor for one signal at the engine sample rate.

    ``density`` is REFERENCE for catalogue recordings, QUERY for files and
    excerpts matched against them, LIVE for broadcast streams.

    ``feed`` accepts chunks of any length (including zero) and returns the
    landmarks that became final; ``flush`` ends the stream and returns the
    rest. The concatenation of all returned landmarks equals ``extract`` of
    the whole signal, bit for bit. Memory stays bounded: only the last
    ``LOOKAHEAD_FRAMES`` frames of context are kept.
    """

    def __init__(self, density: Density = REFERENCE) -> None:
        self._density = density
        self._quotas = density.quotas()
        self._pcm = np.empty(0, np.float32)  # samples from frame ``_n_frames`` on
        self._n_frames = 0  # spectrogram frames computed so far
        self._spec = np.empty((0, 0), np.float32)
        self._spec_start = 0  # absolute frame of self._spec[0]
        self._cand_done = 0  # frames whose local peaks are known
        self._cands = Peaks.empty()  # candidates from frame _sel_done - PEAK_WINDOW on
        self._sel_done = 0  # frames whose peak selection is final
        self._peaks = Peaks.empty()  # selected peaks from frame _anchor_done on
        self._anchor_done = 0  # frames whose anchors have formed their triplets
        self._finished = False

    @property
    def samples_seen(self) -> int:
        """Samples consumed so far, including those still waiting for a full frame."""
        return self._n_frames * HOP + self._pcm.shape[0]

    @property
    def frames_final(self) -> int:
        """Every landmark anchored before this frame has been returned (a live matcher may decide up to here)."""
        return self._anchor_done

    @property
    def frames_seen(self) -> int:
        """Spectrogram frames computed so far: ``provisional`` covers the anchors from ``frames_final`` to here."""
        return self._n_frames

    def feed(self, samples: np.ndarray) -> Landmarks:
        """Add samples (float32, engine rate); return the landmarks now final."""
        if self._finished:
            raise RuntimeError("this Extractor was flushed; create a new one for a new stream")
        samples = check_samples(samples)
        if samples.shape[0] == 0:
            return Landmarks.empty()
        self._pcm = np.concatenate((self._pcm, samples))
        return self._advance(final=False)

    def flush(self) -> Landmarks:
        """End of stream: return the remaining landmarks. The extractor cannot be fed again."""
        if self._finished:
            raise RuntimeError("this Extractor was already flushed")
        self._finished = True
        return self._advance(final=True)

    def provisional(self) -> Landmarks:
        """The landmarks ``flush`` would return now, as if the signal ended here; the extractor is unchanged.

        They are anchored from ``frames_final`` on (the look-ahead, up to
        ``LOOKAHEAD_FRAMES``). Most equal the final ones; those whose peak
        ranking or target zone reaches past the end differ, as at the end of
        a file. A live matcher votes on them to decide on the newest audio
        without waiting for its look-ahead, and takes the final landmarks
        when they come. Costs no spectrum work: every complete frame is
        already computed.
        """
        if self._finished:
            raise RuntimeError("this Extractor was flushed; create a new one for a new stream")
        return copy.copy(self)._advance(final=True)  # every stage replaces its arrays, none writes into them

    def _advance(self, final: bool) -> Landmarks:
        self._compute_frames()
        cand_to = self._n_frames if final else self._n_frames - PEAK_DT
        self._find_candidates(cand_to)
        sel_to = self._cand_done if final else self._cand_done - PEAK_WINDOW
        self._select(sel_to)
        anchor_to = self._sel_done if final else self._sel_done - ZONE_DT_MAX
        return self._form_triplets(anchor_to)

    def _compute_frames(self) -> None:
        n_new = n_frames_for(self._pcm.shape[0])
        if n_new == 0:
            return
        rows = log_spectrogram(self._pcm[: (n_new - 1) * HOP + N_FFT])
        self._pcm = self._pcm[n_new * HOP :].copy()
        keep_from = max(self._cand_done - PEAK_DT, self._spec_start)
        old = self._spec[keep_from - self._spec_start :] if self._spec.size else rows[:0]
        self._spec = np.concatenate((old, rows))
        self._spec_start = keep_from if old.shape[0] else self._n_frames
        self._n_frames += n_new

    def _find_candidates(self, cand_to: int) -> None:
        if cand_to <= self._cand_done:
            return
        base = self._spec_start
        found = _local_peaks(
            self._spec,
            self._cand_done - base,
            cand_to - base,
            PEAK_DT,
            self._density.peak_df,
            PEAK_DF,
            CONTRAST_DF,
            SILENCE_LOG_POWER,
        )
        t, f, contrast, t_frac, f_frac = found
        new = Peaks(t + base, f, contrast, t_frac, f_frac)
        self._cands = Peaks.concat([self._cands, new])
        self._cand_done = cand_to

    def _select(self, sel_to: int) -> None:
        if sel_to <= self._sel_done:
            return
        cands = self._cands
        first = int(np.searchsorted(cands.t, self._sel_done, side="left"))
        last = int(np.searchsorted(cands.t, sel_to, side="left"))
        keep = _select_top(
            cands.t, cands.f, cands.contrast, _BAND_OF_BIN, first, last, PEAK_WINDOW, self._quotas
        )
        self._peaks = Peaks.concat([self._peaks, cands.take(keep)])
        self._sel_done = sel_to
        drop = int(np.searchsorted(cands.t, sel_to - PEAK_WINDOW, side="left"))
        self._cands = cands.take(slice(drop, None))

    def _form_triplets(self, anchor_to: int) -> Landmarks:
        if anchor_to <= self._anchor_done:
            return Landmarks.empty()
        peaks = self._peaks
        last = int(np.searchsorted(peaks.t, anchor_to, side="left"))
        triplets = _triplets(
            peaks.t,
            peaks.t_frac,
            _log2_hz(peaks),
            peaks.contrast,
            0,
            last,
            ZONE_DT_MIN,
            ZONE_DT_MAX,
            ZONE_DF_OCT,
            self._density.targets,
            self._density.max_triplets,
            MONOTONE_OCT,
        )
        self._peaks = peaks.take(slice(last, None))
        self._anchor_done = anchor_to
        return Landmarks(*triplets)


def extract(samples: np.ndarray, density: Density = REFERENCE) -> Landmarks:
    """Landmarks of a whole mono float32 signal at the engine sample rate."""
    extractor = Extractor(density)
    head = extractor.feed(samples)
    return Landmarks.concat([head, extractor.flush()])


def peaks_of(samples: np.ndarray, density: Density = REFERENCE) -> Peaks:
    """Selected spectral peaks of a whole signal (for inspection, plots and tests)."""
    spec = log_spectrogram(samples)
    t, f, contrast, t_frac, f_frac = _local_peaks(
        spec, 0, spec.shape[0], PEAK_DT, density.peak_df, PEAK_DF, CONTRAST_DF, SILENCE_LOG_POWER
    )
    keep = _select_top(t, f, contrast, _BAND_OF_BIN, 0, t.shape[0], PEAK_WINDOW, density.quotas())
    return Peaks(t, f, contrast, t_frac, f_frac).take(keep)

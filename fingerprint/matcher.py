"""Offset-histogram voting over speed hypotheses.

For every query landmark and hypothesis, the key's postings give candidate
reference frames; a true match makes ``frame - b * t_query`` constant (the
reference frame at query frame 0, at time factor ``b``). Votes are counted per
(hypothesis, offset) in an open-addressing table, smoothed over +-1 frame,
and the best bins become candidates. Each candidate is then refined on all
hits: a least-squares line ``frame = speed * t_query + c`` fitted to its
aligned hits gives the speed, and the aligned landmarks (counted once each,
whatever the hypothesis that found them) give the evidence.

Lookup and voting are separate steps (``lookup`` then ``vote``) so that a
live stream can look up each landmark once and vote over a sliding window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from fingerprint.hashes import NO_KEY, Hypotheses, probe_keys, speed_hypotheses
from fingerprint.index import Index, postings_range
from fingerprint.landmarks import Landmarks
from fingerprint.params import FASTMATH, FRAME_RATE

# Defaults calibrated on the benchmark's non-catalogue hour (see docs/benchmarks.md).
MIN_ALIGNED = 10  # aligned landmarks needed to report a match
MIN_SCORE = 0.02  # aligned fraction of the query's landmarks within the matched span
ALIGN_TOLERANCE = 1.5  # frames between a hit and the fitted line
MAX_CANDIDATES = 32  # voting bins refined per query
MIN_FIT_SPAN_S = 3.0  # query seconds of aligned hits needed to fit the speed rather than take the hypothesis's


class Hits(NamedTuple):
    """Index hits of query landmarks, as parallel arrays."""

    serial: np.ndarray  # int64: which query landmark (its serial number)
    t: np.ndarray  # int64: query anchor frame
    hyp: np.ndarray  # int16: hypothesis number
    frame: np.ndarray  # uint32: reference global anchor frame

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.serial.shape[0])

    def take(self, index: np.ndarray | slice) -> "Hits":
        return Hits(*(column[index] for column in self))

    @staticmethod
    def concat(parts: "list[Hits]") -> "Hits":
        if not parts:
            return Hits(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int16), np.empty(0, np.uint32))
        return Hits(*(np.concatenate(column) for column in zip(*parts)))


@dataclass(frozen=True)
class Match:
    """One recording found in a query, in seconds (the JSON contract of DESIGN.md)."""

    track: str
    score: float  # aligned landmarks / query landmarks within [query_start, query_end]
    count: int  # aligned landmarks
    query_start: float
    query_end: float
    ref_start: float  # reference time at query_start
    ref_end: float
    speed: float  # reference seconds per query second

    def as_json(self) -> dict[str, object]:
        return {
            "track": self.track,
            "score": round(self.score, 4),
            "count": self.count,
            "query_start": round(self.query_start, 3),
            "query_end": round(self.query_end, 3),
            "ref_start": round(self.ref_start, 3),
            "ref_end": round(self.ref_end, 3),
            "speed": round(self.speed, 4),
        }


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _lookup(
    keys: np.ndarray, directory: np.ndarray, low: np.ndarray, frames: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All postings of keys[h, p, i]: (landmark i, hypothesis h, reference frame).

    ``p`` indexes the primary key and its probe; NO_KEY entries are skipped.
    """
    n_hyp, n_probe, n = keys.shape
    total = 0
    for h in range(n_hyp):
        for p in range(n_probe):
            for i in range(n):
                if keys[h, p, i] != NO_KEY:
                    lo, hi = postings_range(directory, low, keys[h, p, i])
                    total += hi - lo
    out_i = np.empty(total, np.int64)
    out_h = np.empty(total, np.int16)
    out_f = np.empty(total, np.uint32)
    k = 0
    for h in range(n_hyp):
        for p in range(n_probe):
            for i in range(n):
                if keys[h, p, i] == NO_KEY:
                    continue
                lo, hi = postings_range(directory, low, keys[h, p, i])
                for j in range(lo, hi):
                    out_i[k] = i
                    out_h[k] = h
                    out_f[k] = frames[j]
                    k += 1
    return out_i, out_h, out_f


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _slot(table_key: np.ndarray, key: np.int64, mask: int) -> int:
    slot = ((key * np.int64(0x9E3779B97F4A7C15)) >> 20) & mask
    while table_key[slot] != -1 and table_key[slot] != key:
        slot = (slot + 1) & mask
    return slot


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _vote_bins(
    hyp: np.ndarray, frame: np.ndarray, rel_t: np.ndarray, time_factor: np.ndarray, min_votes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(hypothesis, offset) vote bins holding at least ``min_votes`` votes, counting +-1 offset.

    Counting uses an open-addressing table (no sort); a bin's key is
    ``hyp << 36 | (offset + 2**35)``, so offset neighbours are key neighbours.
    """
    n = hyp.shape[0]
    size = 1024
    while size < 2 * n:
        size *= 2
    mask = size - 1
    table_key = np.full(size, -1, np.int64)
    table_count = np.zeros(size, np.int32)
    for k in range(n):
        offset = np.int64(np.floor(frame[k] - time_factor[hyp[k]] * rel_t[k] + 0.5))
        key = (np.int64(hyp[k]) << 36) | (offset + (np.int64(1) << 35))
        slot = _slot(table_key, key, mask)
        table_key[slot] = key
        table_count[slot] += 1
    out_key = np.empty(size, np.int64)
    out_votes = np.empty(size, np.int32)
    m = 0
    for s in range(size):
        key = table_key[s]
        if key == -1:
            continue
        votes = table_count[s]
        for neighbour in (key - 1, key + 1):
            other = _slot(table_key, neighbour, mask)
            if table_key[other] == neighbour:
                votes += table_count[other]
        if votes >= min_votes:
            out_key[m] = key
            out_votes[m] = votes
            m += 1
    return out_key[:m], out_votes[:m]


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _align(
    rel_t: np.ndarray,
    frame: np.ndarray,
    hyp: np.ndarray,
    seed_hyp: int,
    seed_slope: float,
    seed_offset: float,
    lo: int,
    hi: int,
    tolerance: float,
    min_span: float,
) -> tuple[float, float, np.ndarray]:
    """Fit ``frame = slope * rel_t + intercept`` to a vote bin and collect the hits on that line.

    Pass 0 takes the seed bin's hits (one hypothesis); passes 1-2 refit on the
    hits of every hypothesis within the track [lo, hi) near the current line.
    The slope is only fitted over at least ``min_span`` frames of query.
    """
    n = rel_t.shape[0]
    slope, intercept = seed_slope, seed_offset
    chosen = np.empty(n, np.int64)
    m = 0
    for rnd in range(3):
        sx = sy = sxx = sxy = 0.0
        x_min, x_max = np.inf, -np.inf
        m = 0
        for k in range(n):
            if frame[k] < lo or frame[k] >= hi:
                continue
            if rnd == 0 and hyp[k] != seed_hyp:
                continue
            limit = tolerance + 0.5 if rnd == 0 else tolerance
            if abs(frame[k] - slope * rel_t[k] - intercept) > limit:
                continue
            chosen[m] = k
            m += 1
            x, y = rel_t[k], frame[k]
            sx += x
            sy += y
            sxx += x * x
            sxy += x * y
            x_min = min(x_min, x)
            x_max = max(x_max, x)
        if m == 0:
            break
        if rnd == 2:
            break
        denom = m * sxx - sx * sx
        if m >= 8 and x_max - x_min >= min_span and denom > 0.0:
            slope = (m * sxy - sx * sy) / denom
            intercept = (sy - slope * sx) / m
        else:
            intercept = (sy - slope * sx) / m
    return slope, intercept, chosen[:m].copy()


class Matcher:
    """Identifies reference tracks in query landmarks; stateless apart from its settings."""

    def __init__(
        self,
        index: Index,
        hypotheses: Hypotheses | None = None,
        min_aligned: int = MIN_ALIGNED,
        min_score: float = MIN_SCORE,
    ) -> None:
        self.index = index
        self.hypotheses = hypotheses if hypotheses is not None else speed_hypotheses()
        self.min_aligned = min_aligned
        self.min_score = min_score

    def lookup(self, landmarks: Landmarks, first_serial: int = 0) -> Hits:
        """Index hits of ``landmarks`` under every hypothesis."""
        hyps = self.hypotheses
        keys = np.empty((len(hyps), 2, len(landmarks)), np.uint32)
        for h in range(len(hyps)):
            keys[h, 0], keys[h, 1] = probe_keys(landmarks, hyps.log2_freq[h], hyps.time_factor[h])
        which, hyp, frame = _lookup(keys, self.index.directory, self.index.low, self.index.frames)
        return Hits(which + first_serial, landmarks.t[which], hyp, frame)

    def vote(self, hits: Hits, query_t: np.ndarray, max_matches: int = 5) -> list[Match]:
        """Matches supported by ``hits``; ``query_t`` are the anchor frames of all query landmarks."""
        if len(hits) == 0:
            return []
        t0 = int(query_t.min())
        rel_t = (hits.t - t0).astype(np.float64)
        frame = hits.frame.astype(np.float64)
        time_factor = self.hypotheses.time_factor
        keys, votes = _vote_bins(hits.hyp, frame, rel_t, time_factor, max(3, self.min_aligned // 2))
        if keys.shape[0] == 0:
            return []
        order = np.argsort(-votes, kind="stable")[:MAX_CANDIDATES]
        t_sorted = np.sort(query_t)
        mid = float(np.median(rel_t))
        matches: list[Match] = []
        tried: set[int] = set()
        for j in order:
            hyp = int(keys[j] >> 36)
            offset = float((keys[j] & ((1 << 36) - 1)) - (1 << 35))
            track = self.index.track_of(int(offset + time_factor[hyp] * mid))
            if track in tried or not 0 <= track < self.index.n_tracks:
                continue
            tried.add(track)
            match = self._refine(hits, rel_t, frame, hyp, offset, track, t0, t_sorted)
            if match is not None:
                matches.append(match)
                if len(matches) >= max_matches:
                    break
        matches.sort(key=lambda m: (-m.count, m.track))
        return matches

    def match(self, landmarks: Landmarks, max_matches: int = 5) -> list[Match]:
        """Tracks found in one query's landmarks, best first; [] when none is convincing."""
        if len(landmarks) == 0:
            return []
        return self.vote(self.lookup(landmarks), landmarks.t, max_matches)

    def _refine(
        self,
        hits: Hits,
        rel_t: np.ndarray,
        frame: np.ndarray,
        hyp: int,
        offset: float,
        track: int,
        t0: int,
        t_sorted: np.ndarray,
    ) -> Match | None:
        lo, hi = int(self.index.starts[track]), int(self.index.starts[track + 1])
        b = float(self.hypotheses.time_factor[hyp])
        slope, intercept, aligned = _align(
            rel_t, frame, hits.hyp, hyp, b, offset, lo, hi, ALIGN_TOLERANCE, MIN_FIT_SPAN_S * FRAME_RATE
        )
        count = int(np.unique(hits.serial[aligned]).shape[0])
        if count < self.min_aligned:
            return None
        q_lo = int(rel_t[aligned].min()) + t0
        q_hi = int(rel_t[aligned].max()) + t0
        in_span = int(np.searchsorted(t_sorted, q_hi, side="right") - np.searchsorted(t_sorted, q_lo, side="left"))
        score = count / max(in_span, 1)
        if score < self.min_score:
            return None
        ref_lo = slope * (q_lo - t0) + intercept - lo
        ref_hi = slope * (q_hi - t0) + intercept - lo
        return Match(
            track=self.index.track_ids[track],
            score=float(score),
            count=count,
            query_start=q_lo / FRAME_RATE,
            query_end=q_hi / FRAME_RATE,
            ref_start=float(ref_lo) / FRAME_RATE + 0.0,
            ref_end=float(ref_hi) / FRAME_RATE,
            speed=float(slope),
        )

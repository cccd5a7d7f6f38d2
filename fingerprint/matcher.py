"""Offset-histogram voting with per-hit speed estimates.

Each query triplet's keys give reference postings ("hits"). A hit knows the
reference anchor frame and, from the ratio of the reference and query spans,
the speed at which its triplet was played. A true match makes
``frame - speed * t_query`` constant: each hit votes for that offset under the
few speed hypotheses (a grid in log2 speed) near its own estimate. Votes are
counted per (hypothesis, offset) in an open-addressing table, smoothed over
+-1 frame, and the best bins become candidates. Each candidate is refined on
all hits: a least-squares line ``frame = speed * t_query + c`` fitted to its
aligned, speed-consistent hits gives the speed, and the aligned triplets
(each counted once) give the evidence.

Lookup and voting are separate steps (``lookup`` then ``vote``) so that a
live stream can look up each landmark once and vote over a sliding window.
Keys with many postings are left out of both; given the window's landmarks,
``vote`` looks them up for its best candidates short of the threshold, in
each candidate's own recording only (``lookup_within``), and confirms a
candidate that aligns well enough on all keys together. ``onset`` follows a
match's line back through earlier landmarks, on every key of its recording,
to where a live stream's play began.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numba
import numpy as np

from fingerprint.hashes import probe_keys
from fingerprint.index import Index
from fingerprint.landmarks import Landmarks
from fingerprint.params import (
    DISTORTION_TOL_OCT,
    DT3_SCALE,
    FASTMATH,
    FRAME_RATE,
    HASH_BITS,
    MAX_PITCH_SHIFT_OCT,
    MAX_SPEED_OCT,
    MAX_STRETCH_OCT,
    PITCH_BASE,
    PITCH_STEP,
    PITCH_TOL_OCT,
    SPAN_JITTER,
    SPEED_STEP_OCT,
    SPEED_TOL_MAX_OCT,
    SPEED_STEPS,
    SPEED_VOTE_OCT,
)

# Defaults calibrated on the benchmark's non-catalogue hour (see docs/benchmarks.md).
MIN_ALIGNED = 10  # aligned anchors needed to report a match (per window of up to WINDOW_S)
MIN_SCORE = 0.02  # aligned fraction of the query's anchors within the matched span
ALIGN_TOLERANCE = 1.5  # frames between a hit and the fitted line
MAX_KEY_POSTINGS = 10  # a key with more postings than this (or COMMON_KEY_FACTOR x the mean) is ignored
COMMON_KEY_FACTOR = 5
MAX_CANDIDATES = 32  # best voting bins considered per query
WINDOW_S = 10.0  # a long query is matched in windows this long (what the threshold is calibrated for)
WINDOW_HOP_S = 5.0  # ... every this many seconds
LONG_QUERY_S = 15.0  # queries spanning more than this are matched in windows
MERGE_TOLERANCE_S = 1.5  # window matches of one occurrence agree on the alignment within this
DISTINCT_OFFSET_S = 1.0  # vote bins of one track closer than this in offset
DISTINCT_SPEED = 0.015  # and in speed are one candidate
MIN_FIT_SPAN_S = 3.0  # query seconds of aligned hits needed to fit the speed rather than take the hypothesis's
# Confirmation on common keys (``vote`` given the window's landmarks): a
# candidate from a vote bin of at least CONFIRM_MIN_VOTES votes, with at
# least CONFIRM_MIN_RARE aligned anchors on the keys the vote uses but
# fewer than the threshold, is looked up on the common keys too, within its
# own recording only, and is a match when at least CONFIRM_MIN_ALIGNED
# anchors align on all keys together. The best CONFIRM_CANDIDATES such
# candidates of a window are checked. Bins of 3 votes would also lead to
# candidates with 3 anchors, at 14-19 % more CPU for the same latency
# (docs/benchmarks-daemon.md, 2026-12-07 (later)).
CONFIRM_MIN_VOTES = 4
CONFIRM_MIN_RARE = 3
CONFIRM_MIN_ALIGNED = 20
CONFIRM_CANDIDATES = 4
# ``onset``: a match is extended back along its line over gaps in its aligned
# anchors of up to this long (a play's first seconds hold 5-8 a second).
ONSET_MAX_GAP_S = 2.5
ONSET_STEP_S = 6.0  # ... looked up this far back first (most plays are found within it)
ONSET_REFITS = 2  # ... and its line refitted on the longer span at most this many times


class LookupConfig(NamedTuple):
    """Tuning values of ``_lookup``, passed as an argument (see hashes.HashConfig for why)."""

    dt3_scale: float
    speed_vote_oct: float
    span_jitter: float
    speed_tol_max_oct: float
    pitch_base: float
    pitch_step: float


LOOKUP_CONFIG = LookupConfig(DT3_SCALE, SPEED_VOTE_OCT, SPAN_JITTER, SPEED_TOL_MAX_OCT, PITCH_BASE, PITCH_STEP)


class Hits(NamedTuple):
    """Index hits of query landmarks, as parallel arrays."""

    serial: np.ndarray  # int64: which query landmark (its serial number)
    t: np.ndarray  # int64: query anchor frame
    frame: np.ndarray  # uint32: reference global anchor frame
    log2_speed: np.ndarray  # float32: log2(reference span / query span)
    speed_tol: np.ndarray  # float32: uncertainty of log2_speed, octaves
    transposition: np.ndarray  # float32: query anchor log2 frequency - reference's, octaves

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.serial.shape[0])

    def take(self, index: np.ndarray | slice) -> "Hits":
        return Hits(*(column[index] for column in self))

    @staticmethod
    def concat(parts: "list[Hits]") -> "Hits":
        if not parts:
            return Hits(
                np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint32), *(np.empty(0, np.float32),) * 3
            )
        return Hits(*(np.concatenate(column) for column in zip(*parts)))


@dataclass(frozen=True)
class Match:
    """One recording found in a query, in seconds (the JSON contract of DESIGN.md)."""

    track: str
    score: float  # aligned anchors / query anchors within [query_start, query_end]
    count: int  # query anchor frames with at least one aligned triplet
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


VISIT_SHIFT = 8  # keys are visited in order of key >> VISIT_SHIFT


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _lookup(
    keys: np.ndarray,
    owner: np.ndarray,
    query_dt3: np.ndarray,
    query_lf1: np.ndarray,
    directory: np.ndarray,
    records: np.ndarray,
    max_postings: int,
    cfg: "LookupConfig",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All postings of all keys: (query triplet, reference frame, log2 speed, its tolerance, transposition).

    Keys with more than ``max_postings`` postings are skipped. Keys are
    visited in order of ``key >> VISIT_SHIFT`` (a stable counting sort over
    2**16 groups), so the directory and the records are read front to back
    instead of at random: hits come out in that order.
    """
    n = keys.shape[0]
    n_groups = ((directory.shape[0] - 2) >> VISIT_SHIFT) + 1
    start = np.zeros(n_groups + 1, np.int64)
    for k in range(n):
        start[(keys[k] >> VISIT_SHIFT) + 1] += 1
    for g in range(n_groups):
        start[g + 1] += start[g]
    visit = np.empty(n, np.int64)
    for k in range(n):
        group = keys[k] >> VISIT_SHIFT
        visit[start[group]] = k
        start[group] += 1
    ranges = np.empty((n, 2), np.int64)
    total = 0
    for k in visit:
        lo = np.int64(directory[keys[k]])
        hi = np.int64(directory[keys[k] + 1])
        if hi - lo > max_postings:
            hi = lo
        ranges[k, 0] = lo
        ranges[k, 1] = hi
        total += hi - lo
    return _gather(ranges, visit, total, owner, query_dt3, query_lf1, records, cfg)


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _lookup_within(
    keys: np.ndarray,
    owner: np.ndarray,
    query_dt3: np.ndarray,
    query_lf1: np.ndarray,
    directory: np.ndarray,
    records: np.ndarray,
    max_postings: int,
    lo: int,
    hi: int,
    cfg: "LookupConfig",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What ``_lookup`` skips, on one recording: the postings in global frames [lo, hi) of the keys with more than ``max_postings``.

    A key's records are sorted by frame, so two binary searches find its
    postings in the range however common the key is. Hits come out in key
    order, as ``_lookup``'s columns.
    """
    n = keys.shape[0]
    ranges = np.empty((n, 2), np.int64)
    total = 0
    for k in range(n):
        a = np.int64(directory[keys[k]])
        b = np.int64(directory[keys[k] + 1])
        if b - a <= max_postings:
            ranges[k, 0] = ranges[k, 1] = a
            continue
        x, y = a, b
        while x < y:  # first record at or after lo
            mid = (x + y) >> 1
            if np.int64(records[mid].frame) < lo:
                x = mid + 1
            else:
                y = mid
        first = x
        y = b
        while x < y:  # first record at or after hi
            mid = (x + y) >> 1
            if np.int64(records[mid].frame) < hi:
                x = mid + 1
            else:
                y = mid
        ranges[k, 0] = first
        ranges[k, 1] = x
        total += x - first
    return _gather(ranges, np.arange(n), total, owner, query_dt3, query_lf1, records, cfg)


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _gather(
    ranges: np.ndarray,
    visit: np.ndarray,
    total: int,
    owner: np.ndarray,
    query_dt3: np.ndarray,
    query_lf1: np.ndarray,
    records: np.ndarray,
    cfg: "LookupConfig",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The hit columns of the records ``ranges[k]`` of each key k, keys taken in ``visit`` order."""
    out_i = np.empty(total, np.int64)
    out_f = np.empty(total, np.uint32)
    out_s = np.empty(total, np.float32)
    out_tol = np.empty(total, np.float32)
    out_p = np.empty(total, np.float32)
    log2_span = np.log2(np.maximum(np.arange(256), 1).astype(np.float64))  # spans are bytes: no log per posting
    m = 0
    for k in visit:
        lo, hi = ranges[k, 0], ranges[k, 1]
        if lo == hi:
            continue
        i = owner[k]
        log2_inv = -np.log2(query_dt3[i] * cfg.dt3_scale)
        tol = min(cfg.speed_vote_oct + cfg.span_jitter / (query_dt3[i] * np.log(2.0)), cfg.speed_tol_max_oct)
        for j in range(lo, hi):
            record = records[j]
            out_i[m] = i
            out_f[m] = record.frame
            out_s[m] = log2_span[record.span] + log2_inv
            out_tol[m] = tol
            out_p[m] = query_lf1[i] - (cfg.pitch_base + record.pitch * cfg.pitch_step)
            m += 1
    return out_i, out_f, out_s, out_tol, out_p


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _slot(table_key: np.ndarray, key: np.int64, mask: int) -> int:
    slot = ((key * np.int64(0x9E3779B97F4A7C15)) >> 20) & mask
    while table_key[slot] != -1 and table_key[slot] != key:
        slot = (slot + 1) & mask
    return slot


BLOCK_BITS = 8  # frames per entry of the frame -> track table: 2**8


def block_tracks(starts: np.ndarray) -> np.ndarray:
    """Track of each block of 2**BLOCK_BITS global frames, or -1 where a block spans two tracks."""
    n_blocks = (int(starts[-1]) >> BLOCK_BITS) + 1
    first = np.arange(n_blocks, dtype=np.int64) << BLOCK_BITS
    last = np.minimum(first + (1 << BLOCK_BITS) - 1, max(int(starts[-1]) - 1, 0))
    a = np.searchsorted(starts, first, side="right") - 1
    b = np.searchsorted(starts, last, side="right") - 1
    return np.where(a == b, a, -1).astype(np.int64)


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _group_by_track(frame: np.ndarray, starts: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort of hits by track: hits of track t are order[offsets[t]:offsets[t + 1]].

    ``blocks`` (from ``block_tracks``) answers most hits with one read; a
    block shared by two tracks falls back to a binary search of ``starts``.
    """
    n = frame.shape[0]
    n_tracks = starts.shape[0] - 1
    track = np.empty(n, np.int64)
    offsets = np.zeros(n_tracks + 1, np.int64)
    for k in range(n):
        f = np.int64(frame[k])
        t = blocks[f >> BLOCK_BITS]
        if t < 0:
            lo, hi = 0, n_tracks
            while hi - lo > 1:
                mid = (lo + hi) >> 1
                if starts[mid] <= f:
                    lo = mid
                else:
                    hi = mid
            t = lo
        track[k] = t
        offsets[t + 1] += 1
    for t in range(n_tracks):
        offsets[t + 1] += offsets[t]
    fill = offsets[:-1].copy()
    order = np.empty(n, np.int64)
    for k in range(n):
        order[fill[track[k]]] = k
        fill[track[k]] += 1
    return order, offsets


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _reachable_tracks(
    frame: np.ndarray, rel_t: np.ndarray, order: np.ndarray, offsets: np.ndarray, starts: np.ndarray,
    step: float, steps: int, min_votes: int,
) -> np.ndarray:  # fmt: skip
    """Tracks whose hits could fill a vote bin of ``min_votes`` (bool per track); the others need no vote.

    A bin of ``_track_vote_bins`` at speed s and offset o counts hits with
    frame - s * rel_t within 1.5 frames of o, so their u = frame - rel_t lie
    in an interval of 3 + |s - 1| * (max(rel_t) - min(rel_t)) frames. ``width`` is that for
    the extreme speed hypothesis, plus a frame for rounding; any interval
    that wide lies within two adjacent cells of ``width``, so a track none of
    whose cell pairs holds ``min_votes`` hits cannot reach the threshold. A
    window against a large catalogue has a few dozen hits in nearly every
    recording, spread over all of it: about 2 % of the tracks pass, and the
    vote is an eighth of what it was.
    """
    n_tracks = offsets.shape[0] - 1
    keep = np.zeros(n_tracks, np.bool_)
    if rel_t.shape[0] == 0:
        return keep
    t_lo = t_hi = rel_t[0]
    for k in range(rel_t.shape[0]):
        t_lo = min(t_lo, rel_t[k])
        t_hi = max(t_hi, rel_t[k])
    reach = max(np.exp2(steps * step) - 1.0, 1.0 - np.exp2(-steps * step))
    width = 3.0 + reach * (t_hi - t_lo) + 1.0
    longest = 0
    for t in range(n_tracks):
        longest = max(longest, starts[t + 1] - starts[t])
    cells = np.zeros(int((longest + t_hi - t_lo + 4.0) / width) + 3, np.int32)
    cell = np.empty(order.shape[0], np.int64)
    for t in range(n_tracks):
        a, b = offsets[t], offsets[t + 1]
        if b - a < min_votes:
            continue
        base = starts[t] - t_hi - 2.0  # below any u of the track's hits
        for i in range(a, b):
            k = order[i]
            c = int((frame[k] - rel_t[k] - base) / width)
            c = min(max(c, 0), cells.shape[0] - 2)
            cell[i] = c
            cells[c] += 1
        for i in range(a, b):
            if cells[cell[i]] + cells[cell[i] + 1] >= min_votes:
                keep[t] = True
                break
        for i in range(a, b):
            cells[cell[i]] = 0
    return keep


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _track_vote_bins(
    log2_speed: np.ndarray,
    speed_tol: np.ndarray,
    frame: np.ndarray,
    rel_t: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    step: float,
    steps: int,
    min_votes: int,
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hypothesis, offset) vote bins of each track holding at least ``min_votes`` votes, counting +-1 offset.

    Returns (bin keys, votes, track). The hits of track t are
    ``order[offsets[t]:offsets[t + 1]]``; only tracks with ``keep[t]`` are
    voted (``_reachable_tracks`` says which others cannot reach the threshold). Hypothesis h (0 .. 2*steps) is the
    speed 2**((h - steps) * step); a hit votes for the hypotheses within its
    tolerance of its own estimate. Counting uses an open-addressing table
    (no sort); a bin's key is ``h << 36 | (offset + 2**35)``, so offset
    neighbours are key neighbours.

    Track by track: a table that holds one track's bins stays in cache where
    one table for all hits did not, and a track with fewer hits than
    ``min_votes`` cannot hold a bin that reaches it, so it is skipped. A
    window against a large catalogue has hits in nearly every track, a few
    dozen each: the table is allocated once, and only the slots a track used
    are read back and cleared, so the work follows the hits rather than the
    number of tracks times the table size (against a 100 h catalogue: 2,000
    tracks with hits per 5 s window, the vote in 40 % of the time of a table
    per track). A track's bins come out in the order hits first reached them.
    """
    n = frame.shape[0]
    n_tracks = offsets.shape[0] - 1
    h_lo = np.empty(n, np.int64)
    h_hi = np.empty(n, np.int64)
    largest = 0
    everything = 0
    for t in range(n_tracks):
        a, b = offsets[t], offsets[t + 1]
        if b - a < min_votes or not keep[t]:
            continue
        total = 0
        for i in range(a, b):
            k = order[i]
            h_lo[k] = max(0, int(np.ceil((log2_speed[k] - speed_tol[k]) / step)) + steps)
            h_hi[k] = min(2 * steps, int(np.floor((log2_speed[k] + speed_tol[k]) / step)) + steps)
            total += max(0, h_hi[k] - h_lo[k] + 1)
        largest = max(largest, total)
        everything += total
    size = 1024
    while size < 2 * largest:  # at most half full, so probing always ends
        size *= 2
    mask = size - 1
    table_key = np.full(size, -1, np.int64)
    table_count = np.zeros(size, np.int32)
    used = np.empty(largest, np.int64)
    keys = np.empty(everything, np.int64)
    votes = np.empty(everything, np.int32)
    tracks = np.empty(everything, np.int64)
    speeds = np.exp2((np.arange(2 * steps + 1) - steps) * step)
    m = 0
    for t in range(n_tracks):
        a, b = offsets[t], offsets[t + 1]
        if b - a < min_votes or not keep[t]:
            continue
        n_used = 0
        for i in range(a, b):
            k = order[i]
            for h in range(h_lo[k], h_hi[k] + 1):
                offset = np.int64(np.floor(frame[k] - speeds[h] * rel_t[k] + 0.5))
                key = (np.int64(h) << 36) | (offset + (np.int64(1) << 35))
                slot = _slot(table_key, key, mask)
                if table_key[slot] == -1:
                    table_key[slot] = key
                    used[n_used] = slot
                    n_used += 1
                table_count[slot] += 1
        for s in used[:n_used]:
            key = table_key[s]
            count = table_count[s]
            for neighbour in (key - 1, key + 1):
                other = _slot(table_key, neighbour, mask)
                if table_key[other] == neighbour:
                    count += table_count[other]
            if count >= min_votes:
                keys[m] = key
                votes[m] = count
                tracks[m] = t
                m += 1
        for s in used[:n_used]:
            table_key[s] = -1
            table_count[s] = 0
    return keys[:m], votes[:m], tracks[:m]


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _align(
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
    """Fit ``frame = slope * rel_t + intercept`` from a vote bin; collect the hits on that line.

    A hit is on the line when it lies in the track [lo, hi), within
    ``tolerance`` frames of the line, its own speed estimate is within its
    tolerance of the slope and, after the seed pass, its transposition is
    within ``pitch_tol`` of the candidate's (the median over the previous
    pass). Two refits; the slope is only fitted over at least ``min_span``
    frames of query, otherwise the seed's is kept. Returns slope, intercept,
    transposition and the indices of the aligned hits.
    """
    n = rel_t.shape[0]
    slope, intercept = seed_slope, seed_offset
    chosen = np.empty(n, np.int64)
    shift = 0.0
    m = 0
    for rnd in range(3):
        log2_slope = np.log2(slope)
        limit = tolerance + 0.5 if rnd == 0 else tolerance
        sx = sy = sxx = sxy = 0.0
        x_min, x_max = np.inf, -np.inf
        m = 0
        for k in range(n):
            if frame[k] < lo or frame[k] >= hi:
                continue
            if abs(log2_speed[k] - log2_slope) > speed_tol[k]:
                continue
            if abs(frame[k] - slope * rel_t[k] - intercept) > limit:
                continue
            if rnd > 0 and abs(transposition[k] - shift) > pitch_tol:
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
        if m == 0 or rnd == 2:
            break
        shift = np.median(transposition[chosen[:m]])
        denom = m * sxx - sx * sx
        if m >= 8 and x_max - x_min >= min_span and denom > 0.0:
            slope = (m * sxy - sx * sy) / denom
        intercept = (sy - slope * sx) / m
    return slope, intercept, shift, chosen[:m].copy()


def plausible_distortion(log2_pitch: float, log2_tempo: float) -> bool:
    """Whether (pitch, tempo) factors look like a broadcast's speed change, time-stretch or pitch shift."""
    speed_change = abs(log2_pitch - log2_tempo) <= DISTORTION_TOL_OCT and abs(log2_tempo) <= MAX_SPEED_OCT
    time_stretch = abs(log2_pitch) <= DISTORTION_TOL_OCT and abs(log2_tempo) <= MAX_STRETCH_OCT
    pitch_shift = abs(log2_tempo) <= DISTORTION_TOL_OCT and abs(log2_pitch) <= MAX_PITCH_SHIFT_OCT
    return speed_change or time_stretch or pitch_shift


def merge_occurrences(found: list[tuple[Match, np.ndarray]], anchors: np.ndarray) -> list[Match]:
    """One match per occurrence of a recording, from window matches and their aligned anchor frames.

    Window matches of one track join when they overlap or follow each other
    (within WINDOW_S) and agree on the alignment: the later one's reference
    time is where the earlier one's speed puts it, within
    MERGE_TOLERANCE_S. ``count`` is the number of distinct aligned anchors of
    the occurrence and ``score`` their share of the query anchors it spans.

    A window match that lies within the query span of an occurrence of the
    same recording but disagrees on the alignment is dropped: a recording does
    not play twice at once, so it is that play placed one loop away (music
    that repeats its bass line and drums aligns there too, more so in a window
    that holds only the end of the play).
    """
    groups: list[tuple[Match, np.ndarray]] = []
    for match, aligned in sorted(found, key=lambda f: (f[0].query_start, f[0].track)):
        for g, (head, head_anchors) in enumerate(groups):
            if head.track != match.track or match.query_start > head.query_end + WINDOW_S:
                continue
            expected = head.ref_start + head.speed * (match.query_start - head.query_start)
            if abs(match.ref_start - expected) > MERGE_TOLERANCE_S:
                if match.query_end <= head.query_end + MERGE_TOLERANCE_S:
                    break
                continue
            union = np.union1d(head_anchors, aligned)
            later_end = match.query_end >= head.query_end
            groups[g] = (
                replace(
                    head,
                    count=int(union.shape[0]),
                    query_end=match.query_end if later_end else head.query_end,
                    ref_end=match.ref_end if later_end else head.ref_end,
                    speed=(head.speed * head.count + match.speed * match.count) / (head.count + match.count),
                ),
                union,
            )
            break
        else:
            groups.append((match, aligned))
    out = []
    for match, aligned in groups:
        lo, hi = match.query_start * FRAME_RATE, match.query_end * FRAME_RATE
        in_span = int(np.searchsorted(anchors, hi, side="right") - np.searchsorted(anchors, lo, side="left"))
        out.append(replace(match, score=match.count / max(in_span, 1)))
    return sorted(out, key=lambda m: (m.query_start, m.track))


class Matcher:
    """Identifies reference tracks in query landmarks; stateless apart from its settings."""

    def __init__(self, index: Index, min_aligned: int = MIN_ALIGNED, min_score: float = MIN_SCORE) -> None:
        self.index = index
        self.min_aligned = min_aligned
        self.min_score = min_score
        # Keys far more frequent than chance come from structure many
        # recordings share (a kick drum on every beat, a drone): they cost
        # most of the lookups and are what unrelated music aligns on.
        mean = index.n_postings / 2**HASH_BITS
        self.max_postings = int(max(MAX_KEY_POSTINGS, COMMON_KEY_FACTOR * mean))
        self._blocks = block_tracks(np.asarray(index.starts))
        self._position = {track: i for i, track in enumerate(index.track_ids)}

    def lookup(self, landmarks: Landmarks, first_serial: int = 0) -> Hits:
        """Index hits of ``landmarks`` (serials numbered from ``first_serial``)."""
        keys, owner = probe_keys(landmarks)
        index = self.index
        which, frame, log2_speed, speed_tol, transposition = _lookup(
            keys,
            owner,
            np.ascontiguousarray(landmarks.dt3, dtype=np.float32),
            np.ascontiguousarray(landmarks.lf1, dtype=np.float32),
            index.directory,
            index.records,
            self.max_postings,
            LOOKUP_CONFIG,
        )
        return Hits(which + first_serial, landmarks.t[which], frame, log2_speed, speed_tol, transposition)

    def lookup_within(
        self, landmarks: Landmarks, track: str, probes: tuple[np.ndarray, np.ndarray] | None = None, every: bool = False
    ) -> Hits:
        """The hits ``lookup`` leaves out (keys with more than ``max_postings``) on one recording; ``every``: all its hits.

        ``probes``: ``probe_keys(landmarks)`` if already computed. Serials
        number ``landmarks`` from 0.
        """
        keys, owner = probe_keys(landmarks) if probes is None else probes
        position = self._position[track]
        which, frame, log2_speed, speed_tol, transposition = _lookup_within(
            keys,
            owner,
            np.ascontiguousarray(landmarks.dt3, dtype=np.float32),
            np.ascontiguousarray(landmarks.lf1, dtype=np.float32),
            self.index.directory,
            self.index.records,
            -1 if every else self.max_postings,
            int(self.index.starts[position]),
            int(self.index.starts[position + 1]),
            LOOKUP_CONFIG,
        )
        return Hits(which, landmarks.t[which], frame, log2_speed, speed_tol, transposition)

    def vote(
        self, hits: Hits, query_t: np.ndarray, max_matches: int = 5, landmarks: Landmarks | None = None
    ) -> list[Match]:
        """Matches supported by ``hits``, best first; ``query_t`` are the anchor frames of all query landmarks.

        Meant for one window of up to about WINDOW_S seconds: the decision
        threshold is calibrated for that much audio. Given the window's
        ``landmarks`` (those ``hits`` were looked up for), candidates short
        of the threshold are confirmed on the common keys of their own
        recording (see CONFIRM_MIN_RARE): a play is found on less audio, at
        the cost of a lookup per such candidate.
        """
        return [match for match, _ in self._vote(hits, query_t, landmarks)[:max_matches]]

    def verify(
        self,
        hits: Hits,
        query_t: np.ndarray,
        track: str,
        ref_s: float,
        speed: float,
        landmarks: Landmarks | None = None,
    ) -> Match | None:
        """The match of ``track`` on one given alignment, if ``hits`` support it; None otherwise.

        ``ref_s`` is the recording time expected at the first anchor of
        ``query_t``, ``speed`` the expected speed (a play in progress predicts
        both). Voting keeps one alignment per recording, and in music that
        repeats itself another repetition can outvote the true one for a
        window; this asks about the expected alignment alone, with the same
        thresholds as ``vote``: given the window's ``landmarks``, an
        alignment short of the threshold on rare keys is confirmed on the
        common keys as ``vote`` confirms a candidate (else a rival that the
        confirmation found would outweigh a play it does not look at).
        """
        position = self._position.get(track)
        own = self.hits_of(hits, track)
        if position is None or len(own) == 0:
            return None
        lo = int(self.index.starts[position])
        t0 = int(query_t.min())
        offset = lo + ref_s * FRAME_RATE
        t_sorted = np.unique(query_t)
        found = self._refine(
            own, (own.t - t0).astype(np.float64), own.frame.astype(np.float64), speed, offset, position, t0, t_sorted
        )
        if found is None and landmarks is not None:
            found = self._on_all_keys(own, landmarks, None, position, speed, offset, t0, t_sorted)
        return None if found is None else found[0]

    def onset(self, landmarks: Landmarks, match: Match, max_gap_s: float = ONSET_MAX_GAP_S) -> Match:
        """``match`` moved back along its line to where the recording begins to be heard in ``landmarks``.

        A window's match starts at its first aligned anchor, but a play is
        found only once enough of it has been heard: under talk-over or a
        long crossfade that can be seconds after it began, and the window
        may no longer reach back there. Given the line, the evidence is
        plain: hits of every key of the recording, rare or common, that lie
        on it (speed and pitch consistent with the match) come at 5-8 per
        second from a play's first second on and at about 0.01 per second
        elsewhere (docs/engine.md). The match is extended back from anchor
        to aligned anchor while no two are more than ``max_gap_s`` apart,
        and its line refitted on the longer span (a match found on a few
        seconds may carry its speed hypothesis, not the speed);
        ``landmarks`` (anchor frames on the match's time axis, sorted) bound
        how far. They are looked up ONSET_STEP_S before the match first, all
        of them only if the walk reaches that far.
        """
        position = self._position.get(match.track)
        if position is None or len(landmarks) == 0:
            return match
        lo = int(self.index.starts[position])
        first, last = match.query_start * FRAME_RATE, match.query_end * FRAME_RATE
        reach = first - ONSET_STEP_S * FRAME_RATE
        while True:
            part = landmarks.take(slice(*np.searchsorted(landmarks.t, [reach, last], side="right")))
            found = self._walk_back(self.lookup_within(part, match.track, every=True), match, lo, max_gap_s * FRAME_RATE)
            if found is None:
                return match
            start, speed, ref_first = found
            if start - reach > max_gap_s * FRAME_RATE or reach < landmarks.t[0]:
                break
            reach = -np.inf
        if start == first:
            return match
        return replace(match, query_start=start / FRAME_RATE, ref_start=ref_first + speed * (start - first) / FRAME_RATE, speed=speed)

    @staticmethod
    def _walk_back(hits: Hits, match: Match, lo: int, gap: float) -> tuple[float, float, float] | None:
        """(first frame reached, speed, recording time at the match's start) for ``onset``; None if no hit lies on the match."""
        t, frame = hits.t.astype(np.float64), hits.frame.astype(np.float64)
        first = match.query_start * FRAME_RATE
        speed, ref_first = match.speed, match.ref_start
        start = first
        for refit in range(ONSET_REFITS + 1):
            expected = lo + ref_first * FRAME_RATE + speed * (t - first)
            on = (np.abs(frame - expected) <= ALIGN_TOLERANCE) & (np.abs(hits.log2_speed - np.log2(speed)) <= hits.speed_tol)
            inside = on & (t >= first)
            if not inside.any():
                return None if refit == 0 else (start, speed, ref_first)
            on &= np.abs(hits.transposition - np.median(hits.transposition[inside])) <= PITCH_TOL_OCT
            start = first
            for anchor in np.unique(t[on & (t < first)])[::-1]:
                if start - anchor > gap:
                    break
                start = float(anchor)
            fit = on & (t >= start)
            if refit == ONSET_REFITS or start == first or t[fit].max() - start < MIN_FIT_SPAN_S * FRAME_RATE or fit.sum() < 8:
                break
            slope, intercept = np.polyfit(t[fit] - first, frame[fit] - lo, 1)
            if not plausible_distortion(float(np.median(hits.transposition[fit])), float(np.log2(slope))):
                break
            speed, ref_first = float(slope), float(intercept) / FRAME_RATE
        return start, speed, ref_first

    def track_seconds(self, track: str) -> float:
        """Length of a recording in the index (KeyError if it is not there)."""
        position = self._position[track]
        return float(self.index.starts[position + 1] - self.index.starts[position]) / FRAME_RATE

    def hits_of(self, hits: Hits, track: str) -> Hits:
        """The hits on one recording (none for a recording not in the index)."""
        position = self._position.get(track)
        if position is None:
            return hits.take(slice(0, 0))
        lo, hi = int(self.index.starts[position]), int(self.index.starts[position + 1])
        return hits.take((hits.frame >= lo) & (hits.frame < hi))

    def match(self, landmarks: Landmarks, max_matches: int = 5) -> list[Match]:
        """Recordings found in one query's landmarks; [] when none is convincing.

        A query spanning up to LONG_QUERY_S seconds is one window: at most
        ``max_matches`` matches, best first. A longer one (a recorded
        broadcast) is matched in windows of WINDOW_S seconds every
        WINDOW_HOP_S seconds, so that every decision weighs the same amount of
        audio, and consistent window matches are merged into one match per
        occurrence: every occurrence is returned, in query order.
        """
        if len(landmarks) == 0:
            return []
        hits = self.lookup(landmarks)
        if landmarks.t.max() - landmarks.t.min() <= LONG_QUERY_S * FRAME_RATE:
            return self.vote(hits, landmarks.t, max_matches)
        return self._match_windows(hits, np.unique(landmarks.t))

    def _vote(
        self, hits: Hits, query_t: np.ndarray, landmarks: Landmarks | None = None
    ) -> list[tuple[Match, np.ndarray]]:
        if len(hits) == 0:
            return []
        t0 = int(query_t.min())
        rel_t = (hits.t - t0).astype(np.float64)
        frame = hits.frame.astype(np.float64)
        order, offsets = _group_by_track(hits.frame, self.index.starts, self._blocks)
        min_votes = max(3, self.min_aligned // 2)
        if landmarks is not None:
            min_votes = min(min_votes, CONFIRM_MIN_VOTES)
        keep = _reachable_tracks(frame, rel_t, order, offsets, self.index.starts, SPEED_STEP_OCT, SPEED_STEPS, min_votes)
        keys, votes, tracks = _track_vote_bins(
            hits.log2_speed, hits.speed_tol, frame, rel_t, order, offsets, SPEED_STEP_OCT, SPEED_STEPS, min_votes, keep
        )
        if keys.shape[0] == 0:
            return []
        t_sorted = np.unique(query_t)
        best: dict[int, tuple[Match, np.ndarray]] = {}
        refined: dict[int, list[tuple[float, float]]] = {}
        short: list[tuple[int, int, float, float]] = []  # (aligned anchors, track, slope, intercept) below the threshold
        for j in np.argsort(-votes, kind="stable")[:MAX_CANDIDATES]:
            speed = float(np.exp2(((keys[j] >> 36) - SPEED_STEPS) * SPEED_STEP_OCT))
            offset = float((keys[j] & ((1 << 36) - 1)) - (1 << 35))
            track = int(tracks[j])
            # Looped music puts the same landmarks at several offsets of one
            # track, and raw votes need not favour the true one: refine each
            # distinct offset and keep the best supported.
            done = refined.setdefault(track, [])
            if any(
                abs(offset - other) < DISTINCT_OFFSET_S * FRAME_RATE and abs(speed / other_speed - 1.0) < DISTINCT_SPEED
                for other, other_speed in done
            ):
                continue
            done.append((offset, speed))
            own = order[offsets[track] : offsets[track + 1]]
            own_hits = hits.take(own)
            line = self._fit(own_hits, rel_t[own], frame[own], speed, offset, track)
            if line is None:
                continue
            slope, intercept, aligned = line
            found = self._accept(own_hits, rel_t[own], slope, intercept, aligned, track, t0, t_sorted)
            if found is not None and (track not in best or found[0].count > best[track][0].count):
                best[track] = found
            elif found is None:
                short.append((int(np.unique(own_hits.t[aligned]).shape[0]), track, slope, intercept))
        if landmarks is not None:
            self._confirm(hits, landmarks, short, best, t0, t_sorted)
        return sorted(best.values(), key=lambda f: (-f[0].count, f[0].track))

    def _confirm(
        self,
        hits: Hits,
        landmarks: Landmarks,
        short: list[tuple[int, int, float, float]],
        best: dict[int, tuple[Match, np.ndarray]],
        t0: int,
        t_sorted: np.ndarray,
    ) -> None:
        """Add to ``best`` the candidates in ``short`` that the common keys of their recording confirm."""
        probes = None
        checked = 0
        for rare, track, slope, intercept in sorted(short, key=lambda c: (-c[0], c[1])):
            if rare < CONFIRM_MIN_RARE or checked == CONFIRM_CANDIDATES:
                break
            if track in best:
                continue
            checked += 1
            if probes is None:
                probes = probe_keys(landmarks)
            lo, hi = int(self.index.starts[track]), int(self.index.starts[track + 1])
            own = hits.take((hits.frame >= lo) & (hits.frame < hi))
            found = self._on_all_keys(own, landmarks, probes, track, slope, intercept, t0, t_sorted)
            if found is not None:
                best[track] = found

    def _on_all_keys(
        self,
        own: Hits,
        landmarks: Landmarks,
        probes: tuple[np.ndarray, np.ndarray] | None,
        track: int,
        speed: float,
        offset: float,
        t0: int,
        t_sorted: np.ndarray,
    ) -> tuple[Match, np.ndarray] | None:
        """The match of a line through ``own`` (a window's rare-key hits on ``track``) refitted with the recording's common keys.

        A match needs CONFIRM_MIN_ALIGNED anchors on all keys together,
        CONFIRM_MIN_RARE of them still on rare keys.
        """
        both = Hits.concat([own, self.lookup_within(landmarks, self.index.track_ids[track], probes)])
        rel_t = (both.t - t0).astype(np.float64)
        line = self._fit(both, rel_t, both.frame.astype(np.float64), speed, offset, track)
        if line is None:
            return None
        slope, intercept, aligned = line
        if np.unique(both.t[aligned[aligned < len(own)]]).shape[0] < CONFIRM_MIN_RARE:
            return None
        return self._accept(both, rel_t, slope, intercept, aligned, track, t0, t_sorted, CONFIRM_MIN_ALIGNED)

    def _match_windows(self, hits: Hits, anchors: np.ndarray) -> list[Match]:
        """Windowed matching of a long query (``anchors``: its distinct anchor frames, sorted)."""
        by_time = np.argsort(hits.t, kind="stable")
        hit_t = hits.t[by_time]
        width, hop = int(WINDOW_S * FRAME_RATE), int(WINDOW_HOP_S * FRAME_RATE)
        found: list[tuple[Match, np.ndarray]] = []
        first, last = int(anchors[0]), int(anchors[-1])
        for start in range(first, last + 1, hop):
            a, b = np.searchsorted(hit_t, [start, start + width])
            qa, qb = np.searchsorted(anchors, [start, start + width])
            if b > a:
                found.extend(self._vote(hits.take(by_time[a:b]), anchors[qa:qb]))
            if start + width > last:
                break
        return merge_occurrences(found, anchors)

    def _refine(
        self,
        hits: Hits,
        rel_t: np.ndarray,
        frame: np.ndarray,
        speed: float,
        offset: float,
        track: int,
        t0: int,
        t_sorted: np.ndarray,
    ) -> tuple[Match, np.ndarray] | None:
        """The match a vote bin leads to, and its aligned anchor frames; None if it is not convincing."""
        line = self._fit(hits, rel_t, frame, speed, offset, track)
        if line is None:
            return None
        return self._accept(hits, rel_t, *line, track, t0, t_sorted)

    def _fit(
        self, hits: Hits, rel_t: np.ndarray, frame: np.ndarray, speed: float, offset: float, track: int
    ) -> tuple[float, float, np.ndarray] | None:
        """The line (slope, intercept) a vote bin leads to and the hits on it; None for an implausible distortion."""
        lo, hi = int(self.index.starts[track]), int(self.index.starts[track + 1])
        slope, intercept, shift, aligned = _align(
            rel_t, frame, hits.log2_speed, hits.speed_tol, hits.transposition, speed, offset, lo, hi,
            ALIGN_TOLERANCE, PITCH_TOL_OCT, MIN_FIT_SPAN_S * FRAME_RATE,
        )  # fmt: skip
        if not plausible_distortion(float(shift), float(np.log2(slope))):
            return None
        return float(slope), float(intercept), aligned

    def _accept(
        self,
        hits: Hits,
        rel_t: np.ndarray,
        slope: float,
        intercept: float,
        aligned: np.ndarray,
        track: int,
        t0: int,
        t_sorted: np.ndarray,
        min_aligned: int | None = None,
    ) -> tuple[Match, np.ndarray] | None:
        """The match of a fitted line and its aligned anchor frames, if it meets the thresholds."""
        anchors = np.unique(hits.t[aligned])
        count = int(anchors.shape[0])
        if count < (self.min_aligned if min_aligned is None else min_aligned):
            return None
        lo = int(self.index.starts[track])
        q_lo = int(rel_t[aligned].min()) + t0
        q_hi = int(rel_t[aligned].max()) + t0
        in_span = int(np.searchsorted(t_sorted, q_hi, side="right") - np.searchsorted(t_sorted, q_lo, side="left"))
        score = count / max(in_span, 1)
        if score < self.min_score:
            return None
        ref_lo = slope * (q_lo - t0) + intercept - lo
        ref_hi = slope * (q_hi - t0) + intercept - lo
        match = Match(
            track=self.index.track_ids[track],
            score=float(score),
            count=count,
            query_start=q_lo / FRAME_RATE,
            query_end=q_hi / FRAME_RATE,
            ref_start=float(ref_lo) / FRAME_RATE + 0.0,
            ref_end=float(ref_hi) / FRAME_RATE,
            speed=float(slope),
        )
        return match, anchors

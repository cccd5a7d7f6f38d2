"""Speed-invariant triplet hashing.

Radio plays records 1-5 % fast: every frequency is multiplied and every
duration divided by the same factor; time-stretching changes durations only,
pitch-shifting frequencies only. Pair hashes on a linear frequency axis stop
matching beyond about 1 %. A triplet (anchor, target 2, target 3) has three
coordinates that none of these distortions change: the two octave
differences to the targets and the ratio of the two time differences. Those
are quantised finely. The anchor frequency and the triplet's span do change,
so they only enter in half-octave cells, and the query side also looks in the
neighbouring cell when a value lies near a cell edge ("probes"). One key per
reference triplet, a few per query triplet, no search over speeds.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from fingerprint.landmarks import Landmarks
from fingerprint.params import (
    BIN_HZ,
    FASTMATH,
    FREQ_JITTER_BINS,
    HASH_BITS,
    HASH_COARSE_STEP,
    HASH_DF_STEP,
    HASH_DT3_BASE,
    HASH_F1_BASE,
    HASH_R_STEP,
    PROBE_MARGIN_COARSE,
    PROBE_SIGMAS,
    TIME_JITTER_FRAMES,
)

_DF_BITS = 7
_R_BITS = 5
_COARSE_BITS = 4


class HashConfig(NamedTuple):
    """The tuning values the kernel needs, passed as an argument.

    Numba's on-disk cache only notices changes to the kernel's own source
    file: a kernel reading values from ``params`` as globals would keep
    running with stale values after ``params.py`` changes.
    """

    df_step: float
    r_step: float
    coarse_step: float
    f1_base: float
    dt3_base: float
    coarse_margin: float
    freq_jitter_bins: float
    time_jitter_frames: float
    probe_sigmas: float
    bin_hz: float
    hash_bits: int


CONFIG = HashConfig(
    HASH_DF_STEP,
    HASH_R_STEP,
    HASH_COARSE_STEP,
    HASH_F1_BASE,
    HASH_DT3_BASE,
    PROBE_MARGIN_COARSE,
    FREQ_JITTER_BINS,
    TIME_JITTER_FRAMES,
    PROBE_SIGMAS,
    BIN_HZ,
    HASH_BITS,
)


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _clamp(q: int, top: int) -> int:
    if q < 0:
        return 0
    if q > top:
        return top
    return q


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _mix(raw: int, bits: int) -> np.uint32:
    """Fold the raw field layout into ``bits`` bits with a multiplicative hash."""
    return np.uint32(((raw * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - bits))


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _cells(value: float, step: float, top: int, margin: float) -> tuple[int, int]:
    """Cell of ``value`` and, when ``value`` lies within ``margin`` (value units) of
    the nearer cell edge, the cell beyond that edge (else -1)."""
    scaled = value / step
    cell = np.floor(scaled)
    q = _clamp(int(cell), top)
    below = (scaled - cell) * step
    other = -1
    if q != int(cell):
        return q, other  # clamped: the value is beyond the last cell, nothing lies further out
    if below <= 0.5 * step:
        if below < margin and q > 0:
            other = q - 1
    elif step - below < margin and q < top:
        other = q + 1
    return q, other


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _hash_keys(
    lf1: np.ndarray,
    dlf2: np.ndarray,
    dlf3: np.ndarray,
    dt2: np.ndarray,
    dt3: np.ndarray,
    probe: bool,
    cfg: HashConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of each triplet: its own cell and, when ``probe``, the likely neighbours.

    A neighbouring cell is probed when the value lies near its edge: within
    ``coarse_margin`` of a cell for the coarse anchor-frequency and span
    cells (a speed change moves them), and within ``probe_sigmas`` standard
    deviations of the measurement jitter for the fine fields: peak
    frequencies jitter by about ``freq_jitter_bins`` bins (a large fraction
    of an octave step for bass peaks), peak times by ``time_jitter_frames``.
    Returns (keys, owner): owner[k] is the triplet that key k belongs to.
    """
    n = lf1.shape[0]
    df_top = (1 << _DF_BITS) - 1
    df_mid = 1 << (_DF_BITS - 1)
    coarse_top = (1 << _COARSE_BITS) - 1
    r_top = min(int(round(1.0 / cfg.r_step)), 1 << _R_BITS) - 1
    inv_ln2 = 1.0 / np.log(2.0)
    cap = 32 * n if probe else n
    keys = np.empty(cap, np.uint32)
    owner = np.empty(cap, np.int64)
    coarse_margin = cfg.coarse_margin * cfg.coarse_step if probe else 0.0
    m = 0
    for i in range(n):
        m2 = m3 = mr = 0.0
        if probe:
            # jitter of log2 f for a peak at b bins is freq_jitter_bins / (b ln 2)
            b1 = np.exp2(lf1[i]) / cfg.bin_hz
            b2 = np.exp2(lf1[i] + dlf2[i]) / cfg.bin_hz
            b3 = np.exp2(lf1[i] + dlf3[i]) / cfg.bin_hz
            j1 = 1.0 / (b1 * b1)
            m2 = cfg.probe_sigmas * cfg.freq_jitter_bins * inv_ln2 * np.sqrt(j1 + 1.0 / (b2 * b2))
            m3 = cfg.probe_sigmas * cfg.freq_jitter_bins * inv_ln2 * np.sqrt(j1 + 1.0 / (b3 * b3))
            r = dt2[i] / dt3[i]
            mr = cfg.probe_sigmas * cfg.time_jitter_frames * np.sqrt(1.0 + r * r) / dt3[i]
        d20, d21 = _cells(dlf2[i] + df_mid * cfg.df_step, cfg.df_step, df_top, m2)
        d30, d31 = _cells(dlf3[i] + df_mid * cfg.df_step, cfg.df_step, df_top, m3)
        r0, r1 = _cells(dt2[i] / dt3[i], cfg.r_step, r_top, mr)
        f0, f1 = _cells(lf1[i] - cfg.f1_base, cfg.coarse_step, coarse_top, coarse_margin)
        s0, s1 = _cells(np.log2(dt3[i]) - cfg.dt3_base, cfg.coarse_step, coarse_top, coarse_margin)
        for qd2 in (d20, d21):
            if qd2 < 0:
                continue
            for qd3 in (d30, d31):
                if qd3 < 0:
                    continue
                for qr in (r0, r1):
                    if qr < 0:
                        continue
                    for qf in (f0, f1):
                        if qf < 0:
                            continue
                        for qs in (s0, s1):
                            if qs < 0:
                                continue
                            raw = qd2 | (qd3 << _DF_BITS) | (qr << (2 * _DF_BITS))
                            raw |= (qf << (2 * _DF_BITS + _R_BITS)) | (qs << (2 * _DF_BITS + _R_BITS + _COARSE_BITS))
                            keys[m] = _mix(raw, cfg.hash_bits)
                            owner[m] = i
                            m += 1
    return keys[:m], owner[:m]


def _columns(landmarks: Landmarks) -> tuple[np.ndarray, ...]:
    return tuple(
        np.ascontiguousarray(c, dtype=np.float32)
        for c in (landmarks.lf1, landmarks.dlf2, landmarks.dlf3, landmarks.dt2, landmarks.dt3)
    )


def hash_landmarks(landmarks: Landmarks) -> np.ndarray:
    """One uint32 key (HASH_BITS wide) per triplet: the reference side."""
    keys, _ = _hash_keys(*_columns(landmarks), False, CONFIG)
    return keys


def probe_keys(landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray]:
    """Query side: every key to look up (own cells and probes), and the triplet each belongs to."""
    return _hash_keys(*_columns(landmarks), True, CONFIG)

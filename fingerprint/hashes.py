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

import numba
import numpy as np

from fingerprint.landmarks import Landmarks
from fingerprint.params import (
    FASTMATH,
    HASH_BITS,
    HASH_COARSE_STEP,
    HASH_DF_STEP,
    HASH_DT3_BASE,
    HASH_F1_BASE,
    HASH_R_STEP,
    PROBE_MARGIN_COARSE,
    PROBE_MARGIN_R,
)

_DF_BITS = 7
_R_BITS = 5
_COARSE_BITS = 4
_R_CELLS = int(round(1.0 / HASH_R_STEP))


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _clamp(q: int, top: int) -> int:
    if q < 0:
        return 0
    if q > top:
        return top
    return q


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _mix(raw: int) -> np.uint32:
    """Fold the raw field layout into HASH_BITS with a multiplicative hash."""
    return np.uint32(((raw * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - HASH_BITS))


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _cells(value: float, step: float, top: int, margin: float) -> tuple[int, int]:
    """Cell of ``value`` and, when within ``margin`` of an edge, the neighbouring cell (else -1)."""
    scaled = value / step
    cell = np.floor(scaled)
    q = _clamp(int(cell), top)
    frac = scaled - cell
    other = -1
    if margin > 0.0:
        if frac < margin and q > 0:
            other = q - 1
        elif frac > 1.0 - margin and q < top:
            other = q + 1
    return q, other


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _hash_keys(
    lf1: np.ndarray,
    dlf2: np.ndarray,
    dlf3: np.ndarray,
    dt2: np.ndarray,
    dt3: np.ndarray,
    coarse_margin: float,
    r_margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of each triplet: its own cell and, with margins > 0, the probed neighbours.

    Returns (keys, owner): owner[k] is the triplet that key k belongs to.
    """
    n = lf1.shape[0]
    df_top = (1 << _DF_BITS) - 1
    df_mid = 1 << (_DF_BITS - 1)
    coarse_top = (1 << _COARSE_BITS) - 1
    keys = np.empty(8 * n, np.uint32)
    owner = np.empty(8 * n, np.int64)
    m = 0
    for i in range(n):
        qd2 = _clamp(int(np.floor(dlf2[i] / HASH_DF_STEP)) + df_mid, df_top)
        qd3 = _clamp(int(np.floor(dlf3[i] / HASH_DF_STEP)) + df_mid, df_top)
        r0, r1 = _cells(dt2[i] / dt3[i], HASH_R_STEP, _R_CELLS - 1, r_margin)
        f0, f1 = _cells(lf1[i] - HASH_F1_BASE, HASH_COARSE_STEP, coarse_top, coarse_margin)
        s0, s1 = _cells(np.log2(dt3[i]) - HASH_DT3_BASE, HASH_COARSE_STEP, coarse_top, coarse_margin)
        base = qd2 | (qd3 << _DF_BITS)
        for qr in (r0, r1):
            if qr < 0:
                continue
            for qf in (f0, f1):
                if qf < 0:
                    continue
                for qs in (s0, s1):
                    if qs < 0:
                        continue
                    raw = base | (qr << (2 * _DF_BITS)) | (qf << (2 * _DF_BITS + _R_BITS))
                    raw |= qs << (2 * _DF_BITS + _R_BITS + _COARSE_BITS)
                    keys[m] = _mix(raw)
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
    keys, _ = _hash_keys(*_columns(landmarks), 0.0, 0.0)
    return keys


def probe_keys(
    landmarks: Landmarks, coarse_margin: float = PROBE_MARGIN_COARSE, r_margin: float = PROBE_MARGIN_R
) -> tuple[np.ndarray, np.ndarray]:
    """Query side: every key to look up, and the triplet each belongs to."""
    return _hash_keys(*_columns(landmarks), float(coarse_margin), float(r_margin))

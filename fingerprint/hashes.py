"""Landmark hashing under speed hypotheses.

Radio plays records 1-5 % fast, which multiplies every frequency and divides
every time difference by the same factor; pair hashes on a linear frequency
axis then stop matching beyond about 1 %. We keep landmarks continuous and
quantise them only here. The octave difference of a pair is invariant under a
speed change; the anchor frequency and the time difference are not, so the
query is hashed once per hypothesis (freq factor ``a``, time factor ``b``),
each undoing a candidate distortion before quantisation. The reference side
is always hashed at ``a = b = 1``. Matching votes per hypothesis, so the winner
also tells the speed.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from fingerprint.landmarks import Landmarks
from fingerprint.params import (
    FASTMATH,
    HASH_DF_BITS,
    HASH_DF_STEP,
    HASH_DT_BITS,
    HASH_DT_PROBE_MARGIN,
    HASH_DT_STEP,
    HASH_F1_BASE,
    HASH_F1_BITS,
    HASH_F1_STEP,
    SPEED_STEP_OCT,
    SPEED_STEPS,
)


class Hypotheses(NamedTuple):
    """Distortions to undo on the query: frequencies were multiplied by
    ``2**log2_freq`` and time stretched by ``1/time_factor``."""

    log2_freq: np.ndarray  # float64
    time_factor: np.ndarray  # float64: reference seconds per query second

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.log2_freq.shape[0])


IDENTITY = Hypotheses(np.zeros(1), np.ones(1))


def speed_hypotheses(step_oct: float = SPEED_STEP_OCT, steps: int = SPEED_STEPS) -> Hypotheses:
    """Pitch-and-tempo speed factors 2**(k*step_oct), k in [-steps, steps], identity first."""
    k = np.array([0] + [s for i in range(1, steps + 1) for s in (i, -i)], dtype=np.float64)
    log2_speed = k * step_oct
    return Hypotheses(log2_speed, np.exp2(log2_speed))


NO_KEY = np.uint32(0xFFFFFFFF)  # marks "no probe"; never a valid key (HASH_BITS < 32)


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _clamp(q: int, bits: int) -> int:
    top = (1 << bits) - 1
    if q < 0:
        return 0
    if q > top:
        return top
    return q


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _hash_keys(
    lf1: np.ndarray, dlf: np.ndarray, dt: np.ndarray, log2_freq: float, time_factor: float, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of landmarks after undoing the distortion (log2_freq, time_factor).

    The second array holds, for landmarks whose time difference falls within
    ``margin`` cells of a cell edge, the key with the neighbouring time cell,
    and NO_KEY elsewhere (always NO_KEY when margin is 0).
    """
    n = lf1.shape[0]
    keys = np.empty(n, np.uint32)
    probes = np.full(n, NO_KEY, np.uint32)
    df_half = 1 << (HASH_DF_BITS - 1)
    for i in range(n):
        q1 = _clamp(int(np.floor((lf1[i] - log2_freq - HASH_F1_BASE) / HASH_F1_STEP)), HASH_F1_BITS)
        qd = _clamp(int(np.floor(dlf[i] / HASH_DF_STEP)) + df_half, HASH_DF_BITS)
        scaled = dt[i] * time_factor / HASH_DT_STEP
        cell = np.floor(scaled)
        qt = _clamp(int(cell), HASH_DT_BITS)
        head = (q1 << (HASH_DF_BITS + HASH_DT_BITS)) | (qd << HASH_DT_BITS)
        keys[i] = head | qt
        frac = scaled - cell
        if margin > 0.0:
            if frac < margin and qt > 0:
                probes[i] = head | (qt - 1)
            elif frac > 1.0 - margin and qt < (1 << HASH_DT_BITS) - 1:
                probes[i] = head | (qt + 1)
    return keys, probes


def hash_landmarks(landmarks: Landmarks, log2_freq: float = 0.0, time_factor: float = 1.0) -> np.ndarray:
    """uint32 keys (HASH_BITS wide) of ``landmarks`` under one hypothesis (the reference side)."""
    return _hash_keys(*_columns(landmarks), float(log2_freq), float(time_factor), 0.0)[0]


def probe_keys(
    landmarks: Landmarks, log2_freq: float, time_factor: float, margin: float = HASH_DT_PROBE_MARGIN
) -> tuple[np.ndarray, np.ndarray]:
    """Query side: primary keys and neighbouring-cell probes (NO_KEY where none) under one hypothesis."""
    return _hash_keys(*_columns(landmarks), float(log2_freq), float(time_factor), float(margin))


def _columns(landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(landmarks.lf1, dtype=np.float32),
        np.ascontiguousarray(landmarks.dlf, dtype=np.float32),
        np.ascontiguousarray(landmarks.dt, dtype=np.float32),
    )

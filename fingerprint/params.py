"""The engine's fixed analysis parameters.

Landmarks are only comparable when both sides were extracted with the same
parameters, so they live in one place and an index records
``PARAMS_VERSION``: loading an index built with other parameters fails with
a clear error instead of silently matching nothing.
"""

from __future__ import annotations

import math

PARAMS_VERSION = 1

# Fast-math flags for every kernel: all of LLVM's except ``nnan`` and ``ninf``,
# because silence legitimately produces log(0)-like values and infinities
# must compare correctly.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

SAMPLE_RATE = 8000
N_FFT = 1024
HOP = 256
FRAME_RATE = SAMPLE_RATE / HOP  # frames per second (31.25)

# Analysis band: below ~200 Hz broadcast chains, phone lines and pink noise
# leave little that survives; above ~3.7 kHz the 8 kHz engine rate ends.
F_MIN_HZ = 200.0
F_MAX_HZ = 3700.0
BIN_HZ = SAMPLE_RATE / N_FFT
BIN_LO = int(math.floor(F_MIN_HZ / BIN_HZ))
BIN_HI = int(math.ceil(F_MAX_HZ / BIN_HZ)) + 1
N_BINS = BIN_HI - BIN_LO

# Peak picking: a peak is a local maximum of the log power spectrum over
# +-PEAK_DT frames and +-PEAK_DF bins, whose contrast (log power minus the mean
# log power of +-CONTRAST_DF bins in its frame) ranks among the PEAK_TOP_K
# highest within +-PEAK_WINDOW frames. The rank rule fixes the density at
# about PEAK_TOP_K peaks per (2*PEAK_WINDOW+1) frames, independent of level.
PEAK_DT = 2
PEAK_DF = 4
CONTRAST_DF = 24
PEAK_WINDOW = 15
PEAK_TOP_K = 28
# Log power below this is treated as silence (about -90 dBFS for a full-scale
# sine through the Hann window): digital silence yields no peaks.
SILENCE_LOG_POWER = -8.0

# Pairing: each anchor peak pairs with up to FANOUT later peaks whose time
# difference lies in [PAIR_DT_MIN, PAIR_DT_MAX] frames and whose frequency is
# within PAIR_DF_OCT octaves of the anchor's.
PAIR_DT_MIN = 1
PAIR_DT_MAX = 40
PAIR_DF_OCT = 1.5
FANOUT = 5

# Frames of look-ahead after which the landmarks anchored at a frame are final.
LOOKAHEAD_FRAMES = PAIR_DT_MAX + PEAK_WINDOW + PEAK_DT + 1

# Hashing (fingerprint.hashes). A landmark's key quantises three coordinates:
# the anchor's log frequency (shifted by a speed hypothesis on the query side),
# the octave difference to the target (invariant under speed change) and the
# time difference (scaled by the hypothesis). Frequency steps are in octaves.
# The time step is linear, one frame: peak times jitter by ~0.2 frame when the
# query's frame grid falls between the reference's, and narrower (log) cells
# lost half the pairs to that alone.
HASH_F1_STEP = 1.0 / 16.0
HASH_F1_BASE = 7.0  # log2 Hz of cell 0 (128 Hz: room below F_MIN for pitch hypotheses)
HASH_F1_BITS = 7
HASH_DF_STEP = 1.0 / 32.0
HASH_DF_BITS = 7
HASH_DT_STEP = 1.0
HASH_DT_BITS = 6
HASH_BITS = HASH_F1_BITS + HASH_DF_BITS + HASH_DT_BITS
# Query side only: a landmark whose scaled time difference lies within this
# fraction of a cell edge is also looked up in the neighbouring cell.
HASH_DT_PROBE_MARGIN = 0.3

# Speed hypotheses tried on the query side: factors 2**(k * SPEED_STEP_OCT)
# for k in [-SPEED_STEPS, SPEED_STEPS] (about x0.88 to x1.13).
SPEED_STEP_OCT = 0.02
SPEED_STEPS = 9

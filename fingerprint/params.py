"""The engine's fixed analysis parameters.

Landmarks are only comparable when both sides were extracted with the same
parameters, so they live in one place and an index records
``PARAMS_VERSION``: loading an index built with other parameters fails with
a clear error instead of silently matching nothing.
"""

from __future__ import annotations

import math

PARAMS_VERSION = 2

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
F_MIN_HZ = 60.0
F_MAX_HZ = 3700.0
BIN_HZ = SAMPLE_RATE / N_FFT
# Peaks are local maxima over +-PEAK_DF bins (see below); the spectrogram
# reaches PEAK_DF bins beyond the band on both sides so that a peak at the
# band's edge is a true maximum and not the foot of a slope leaving the band.
PEAK_DF = 4
BIN_LO = int(math.floor(F_MIN_HZ / BIN_HZ)) - PEAK_DF
BIN_HI = int(math.ceil(F_MAX_HZ / BIN_HZ)) + 1 + PEAK_DF
N_BINS = BIN_HI - BIN_LO

# Peak picking: a peak is a local maximum of the log power spectrum over
# +-PEAK_DT frames and +-PEAK_DF bins, whose contrast (log power minus the mean
# log power of +-CONTRAST_DF bins in its frame) ranks among the PEAK_TOP_K[b]
# highest of its frequency band b within +-PEAK_WINDOW frames. The rank rule
# fixes the density at about PEAK_TOP_K[b] peaks per band per
# (2*PEAK_WINDOW+1) frames, independent of level; the bands keep one loud or
# noisy region from taking every peak (under broadband noise the bass often
# keeps the best SNR).
PEAK_DT = 2
CONTRAST_DF = 48
PEAK_WINDOW = 15
PEAK_BAND_EDGES_HZ = (60.0, 220.0, 560.0, 1300.0, 3700.0)
# Reference quotas lean to the bass. Pink noise has equal power per octave
# while music's power falls with frequency, so the low bands keep the best
# SNR: at 0 dB, 65 % of the reference's peaks under 560 Hz reappear among the
# query's, 55 % at 560-1300 Hz and 37 % above. Bass-heavy tracks (spectral
# centroid 100-150 Hz) then keep little but their lowest band, which 7 peaks a
# window left too thin for ten aligned anchors in 5 s. Moving quota from the
# top band to the bottom one (7/7/7/7 -> 10/8/6/4) raised pink noise 0 dB at
# 5 s from 91.4 to 93.4 % on a fixed sample of 558 queries with 5 % fewer
# postings (the bottom band rarely has ten local maxima a window to give).
PEAK_TOP_K = (10, 8, 6, 4)
# Log power below this is treated as silence (about -90 dBFS for a full-scale
# sine through the Hann window): digital silence yields no peaks.
SILENCE_LOG_POWER = -8.0

# Triplets: each anchor peak takes the TARGETS strongest peaks (by contrast)
# whose time difference lies in [ZONE_DT_MIN, ZONE_DT_MAX] frames and whose
# frequency is within ZONE_DF_OCT octaves of the anchor's, and forms one
# triplet (anchor, earlier target, later target) per pair of them. Strongest
# rather than nearest spreads the time differences over the zone (better
# entropy, better ratio precision) and favours peaks that survive noise.
ZONE_DT_MIN = 2
ZONE_DT_MAX = 32
ZONE_DF_OCT = 1.5
TARGETS = 4
# Of the 6 pairs of 4 targets, the reference keeps the 5 strongest-first
# ones: the pair of the two weakest targets survives noise least and would
# cost a sixth of the index memory.
MAX_TRIPLETS = 5
# Monotone triplets (both targets within this many octaves of the anchor's
# frequency: one note repeated in rhythm) are skipped on both sides: they
# encode only rhythm, and unrelated songs with a repeated bass note aligned on
# them.
MONOTONE_OCT = 1.0 / 40.0

# The query side (anything matched against the index: files, live streams)
# picks more peaks and targets than the reference side. Noise and talk-over
# add peaks that push reference peaks down the rankings; a denser query keeps
# more of the reference's triplets among its own, at the cost of more lookups
# per second of query, not of index memory.
QUERY_PEAK_TOP_K = (14, 14, 14, 14)
QUERY_TARGETS = 8
# A live stream (monitor.stream) takes one target fewer per anchor: 21
# triplets instead of 28, so a quarter fewer lookups and votes. A stream is
# matched window after window and a play is confirmed by many windows, not by
# one query: on simulated broadcasts (clean, pink noise at 0 dB over the
# whole broadcast, MP3 at 32 kbit/s) it found as many plays, with the same
# detection latency, for 13-20 % less CPU; on the daemon benchmark's
# broadcasts it lost one excerpt on the evidence threshold, at one of two
# chunk phases, of 150 (docs/benchmarks-daemon.md).
LIVE_TARGETS = 7
# A live stream's peaks are local maxima over +-LIVE_PEAK_DF bins instead of
# +-PEAK_DF (the guard band stays PEAK_DF). A presenter over a song's intro
# puts strong harmonics 100-250 Hz apart everywhere from the bass up: a
# music peak within 4 bins (31 Hz) of a louder voice harmonic stopped being
# a maximum, and under talk-over the live query kept only half the
# reference's peaks above 220 Hz. Over +-2 bins more of them stay
# candidates (the quota still ranks by contrast): on the daemon
# benchmark's broadcasts talked-over plays were announced 1-2 s sooner,
# the others as before, with no play announced on 10 h of non-catalogue
# broadcast; +-1 bin was faster still but placed a play of a song that
# repeats itself on its other occurrence and reported it in two pieces
# (docs/benchmarks-daemon.md). The reference keeps +-PEAK_DF: its peaks are
# what a query must find, and fewer, stronger ones cost less index memory.
LIVE_PEAK_DF = 2

# Frames of look-ahead after which the landmarks anchored at a frame are final.
LOOKAHEAD_FRAMES = ZONE_DT_MAX + PEAK_WINDOW + PEAK_DT + 1

# Hashing (fingerprint.hashes). A triplet's key combines quantities that a
# speed change (frequencies x s, durations / s) leaves unchanged, at fine
# steps, with two that it moves, at coarse steps:
#   invariant: octave differences target-anchor (dlf2, dlf3) and the time
#              ratio r = dt2 / dt3;
#   coarse:    the anchor's log frequency and log dt3, in half-octave cells
#              (a +-10 % speed change moves them by at most 0.28 cell).
# The query is also looked up in the neighbouring coarse cell when within
# PROBE_MARGIN_COARSE of an edge, and in neighbouring fine cells when within
# PROBE_SIGMAS standard deviations of the measurement jitter: peak frequencies
# jitter by about FREQ_JITTER_BINS bins under noise (0.01 octave for a 100 Hz
# bass peak, so without probes only 27 % of bass triplets kept their cells),
# peak times by about TIME_JITTER_FRAMES frames.
HASH_DF_STEP = 1.0 / 40.0  # octaves
HASH_R_STEP = 1.0 / 24.0
HASH_COARSE_STEP = 0.5  # octaves
HASH_F1_BASE = 5.5  # log2 Hz of the first anchor-frequency cell (45 Hz)
HASH_DT3_BASE = 1.0  # log2 frames of the first span cell
PROBE_MARGIN_COARSE = 0.25
FREQ_JITTER_BINS = 0.1
TIME_JITTER_FRAMES = 0.25
PROBE_SIGMAS = 1.0
# Raw fields (dlf2, dlf3: 7 bits; r: 5; coarse f1, dt3: 4 each) are mixed into
# HASH_BITS; the few collisions this causes only add random hits.
HASH_BITS = 24
# The reference span dt3 is kept with each posting, in quarter frames, so a
# hit tells the speed of its own triplet: reference dt3 / query dt3.
DT3_SCALE = 4.0
# And the anchor's log2 frequency, in PITCH_STEP octaves from PITCH_BASE: a
# true match transposes every triplet by the same factor (the speed, for a
# record played fast; 1 for a time-stretch), while two different songs that
# share intervals and rhythm align at a mixture of transpositions.
PITCH_STEP = 1.0 / 40.0
PITCH_BASE = 5.5
# Matching: aligned hits must agree on the transposition within this.
PITCH_TOL_OCT = 0.035
# The distortions a broadcast applies, as (pitch factor a, tempo factor b):
# a speed change (a = b: a record or a resampler running fast) up to about
# +-13 %, a time-stretch (a = 1: time compression) up to about +-7 %, a pitch
# shift (b = 1) up to about +-4 %. A match must lie within DISTORTION_TOL_OCT
# (in log2) of one of them. Two different songs that share intervals and a
# rhythm align at musical transpositions (a semitone is 5.9 %, a whole tone
# 12 %: chords on neighbouring scale degrees) and arbitrary tempo ratios; these
# limits reject most of them.
MAX_SPEED_OCT = 0.18
MAX_STRETCH_OCT = 0.10
MAX_PITCH_SHIFT_OCT = 0.06
DISTORTION_TOL_OCT = 0.04

# Voting: speed hypotheses 2**(k * SPEED_STEP_OCT), k in [-SPEED_STEPS,
# SPEED_STEPS] (about x0.88 to x1.14). A hit's own speed estimate
# (reference span / query span) is uncertain by about SPAN_JITTER frames on
# each span, so it votes for the hypotheses within
# SPEED_VOTE_OCT + SPAN_JITTER / (query span * ln 2) octaves of its estimate.
SPEED_STEP_OCT = 0.02
SPEED_STEPS = 9
SPEED_VOTE_OCT = 0.02
SPAN_JITTER = 0.4
SPEED_TOL_MAX_OCT = 0.10  # short spans say little about speed; cap their votes

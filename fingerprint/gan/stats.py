"""Does the generator sound like music? Spectral statistics of generated versus real audio.

Four sources are compared on equal-length clips: real music (two disjoint
sets of clips, so the real-versus-real row shows how close "close" is), the
trained generator, the same network untrained, and white noise. Measures:

- mean log-mel profile: each clip's average dB per mel band, relative to the
  clip's own mean level; reported as the RMS dB distance to the real clips'
  average profile (music tilts down in frequency; noise is flat);
- spectral flatness: geometric over arithmetic mean of each frame's power
  spectrum, median over frames (0 = pure tones, 1 = white noise);
- onset rate: peaks of positive spectral flux per second (notes and drums
  start; stationary noise has few clear onsets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fingerprint.audio import decode
from fingerprint.gan.generator import Generator
from fingerprint.gan.spectral import HOP, log_mel, stft
from fingerprint.params import SAMPLE_RATE

CLIP_SECONDS = 8.0
ONSET_MIN_GAP_S = 0.05


def profile(clip: np.ndarray) -> np.ndarray:
    """Average dB per mel band relative to the clip's mean dB."""
    mel = log_mel(clip)
    bands = mel.mean(axis=0)
    return bands - bands.mean()


def flatness(clip: np.ndarray) -> float:
    power = np.abs(stft(clip))[:, 3:] ** 2 + 1e-12  # from about 40 Hz up
    ratio = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return float(np.median(ratio))


def onset_rate(clip: np.ndarray) -> float:
    """Onsets per second: local maxima of positive spectral flux above its mean plus one standard deviation."""
    mel = log_mel(clip)
    flux = np.maximum(np.diff(mel, axis=0), 0.0).sum(axis=1)
    threshold = flux.mean() + flux.std()
    gap = max(1, int(ONSET_MIN_GAP_S * SAMPLE_RATE / HOP))
    onsets, last = 0, -gap
    for t in range(1, flux.shape[0] - 1):
        if flux[t] > threshold and flux[t] >= flux[t - 1] and flux[t] >= flux[t + 1] and t - last >= gap:
            onsets += 1
            last = t
    return onsets / (clip.shape[0] / SAMPLE_RATE)


def real_clips(tracks: list[Path], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n clips of CLIP_SECONDS from distinct random tracks (fewer if there are fewer tracks), skipping silence."""
    clips = []
    n_samples = int(CLIP_SECONDS * SAMPLE_RATE)
    for index in rng.permutation(len(tracks)):
        if len(clips) == n:
            break
        audio = decode(tracks[int(index)])
        if audio.shape[0] < 2 * n_samples:
            continue
        start = int(rng.integers(0, audio.shape[0] - n_samples))
        clip = audio[start : start + n_samples]
        if np.sqrt(np.mean(clip**2)) > 1e-3:
            clips.append(clip)
    return clips


def describe(clips: list[np.ndarray], reference_profile: np.ndarray) -> dict[str, float]:
    mean_profile = np.mean([profile(c) for c in clips], axis=0)
    return {
        "clips": len(clips),
        "profile_distance_db": round(float(np.sqrt(np.mean((mean_profile - reference_profile) ** 2))), 2),
        "flatness": round(float(np.mean([flatness(c) for c in clips])), 4),
        "onsets_per_s": round(float(np.mean([onset_rate(c) for c in clips])), 2),
    }


def compare(trained: Generator, untrained: Generator, tracks: list[Path], n: int, seed: int) -> dict[str, dict[str, float]]:
    """Statistics of each source; the reference profile is that of the first half of the real clips."""
    rng = np.random.default_rng(seed + 1)
    clips = real_clips(tracks, 2 * n, rng)
    half = len(clips) // 2
    reference, held_out = clips[:half], clips[half:]
    reference_profile = np.mean([profile(c) for c in reference], axis=0)
    seeds = [seed * 1000 + k for k in range(n)]
    sources = {
        "real music (other clips)": held_out,
        "trained generator": [trained.sample(CLIP_SECONDS, s) for s in seeds],
        "untrained generator": [untrained.sample(CLIP_SECONDS, s) for s in seeds],
        "white noise": [rng.standard_normal(int(CLIP_SECONDS * SAMPLE_RATE)).astype(np.float32) * 0.3 for _ in seeds],
    }
    result = {"real music (reference clips)": describe(reference, reference_profile)}
    result |= {name: describe(audio, reference_profile) for name, audio in sources.items()}
    return result


def table(comparison: dict[str, dict[str, float]]) -> str:
    """The comparison as a markdown table."""
    lines = [
        "| source | clips | mean log-mel profile: RMS distance to real (dB) | spectral flatness | onsets per second |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in comparison.items():
        lines.append(f"| {name} | {row['clips']} | {row['profile_distance_db']:.2f} | {row['flatness']:.4f} | {row['onsets_per_s']:.2f} |")
    return "\n".join(lines)

"""Procedural music: distinct, deterministic, music-like test recordings in milliseconds.

Tests and the demo need reference audio without downloads. Each seed gives
its own key, tempo, chord progression, melody, bass line and drum pattern,
rendered as additive harmonic notes with envelopes plus noise percussion:
enough spectral structure (harmonic peaks, onsets, repetition) to exercise
the fingerprinter the way real music does.
"""

from __future__ import annotations

import numpy as np

from fingerprint.params import SAMPLE_RATE

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _note(freq: float, length: int, sr: int, harmonics: np.ndarray, decay: float) -> np.ndarray:
    t = np.arange(length) / sr
    partials = np.arange(1, harmonics.shape[0] + 1)[:, None]
    tone = (harmonics[:, None] * np.sin(2 * np.pi * freq * partials * t)).sum(axis=0)
    attack = np.minimum(1.0, t / 0.01)
    return tone * attack * np.exp(-t * decay)


def music(seconds: float, seed: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``seconds`` of mono float32 music at ``sr``, peak-normalised to 0.9; same seed, same audio."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n + sr, np.float64)
    tonic = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    beat = int(sr * 60 / rng.uniform(80, 150))
    lead_harm = rng.uniform(0.1, 1.0, 6) / np.arange(1, 7)
    pad_harm = rng.uniform(0.1, 1.0, 4) / np.arange(1, 5) ** 1.5
    progression = rng.integers(0, 7, 4)
    melody = rng.integers(0, 14, 16)
    rhythm = rng.choice([1, 1, 2, 2, 4], 16)
    kick = np.sin(2 * np.pi * 60 * np.arange(beat // 2) / sr) * np.exp(-np.arange(beat // 2) / (0.05 * sr))
    hat_len = int(0.03 * sr)
    hat_env = np.exp(-np.arange(hat_len) / (0.006 * sr))

    def pitch(degree: int, octave: int) -> float:
        semis = scale[degree % 7] + 12 * (degree // 7 + octave)
        return tonic * 2 ** (semis / 12)

    pos, step, bar = 0, 0, 0
    while pos < n:
        chord = int(progression[bar % 4])
        for d in (0, 2, 4):
            f = pitch(chord + d, 1)
            out[pos : pos + 4 * beat] += 0.12 * _note(f, min(4 * beat, out.shape[0] - pos), sr, pad_harm, 1.0)
        bass = pitch(chord, 0)
        for b in range(4):
            start = pos + b * beat
            if start >= n:
                break
            out[start : start + beat] += 0.25 * _note(bass, min(beat, out.shape[0] - start), sr, pad_harm[:2], 4.0)
            out[start : start + kick.shape[0]] += 0.5 * kick[: out.shape[0] - start]
            hat_at = start + beat // 2
            if hat_at + hat_len < out.shape[0]:
                out[hat_at : hat_at + hat_len] += 0.08 * rng.standard_normal(hat_len) * hat_env
        mel_pos = pos
        while mel_pos < pos + 4 * beat and mel_pos < n:
            length = int(beat * rhythm[step % 16] / 2)
            f = pitch(int(melody[step % 16]) + chord, 2)
            seg = min(length, out.shape[0] - mel_pos)
            out[mel_pos : mel_pos + seg] += 0.3 * _note(f, seg, sr, lead_harm, 3.0)
            mel_pos += length
            step += 1
        if bar % 8 == 7:
            melody = (melody + rng.integers(-2, 3, 16)) % 14
        pos += 4 * beat
        bar += 1
    out = out[:n]
    peak = np.abs(out).max()
    return (0.9 * out / peak).astype(np.float32) if peak > 0 else out.astype(np.float32)

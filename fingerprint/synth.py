"""Procedural music: distinct, deterministic, music-like test recordings in milliseconds.

Tests and the demo need reference audio without downloads. Each seed draws
its own tuning (a continuous tonic, not a semitone of a shared scale), tempo,
scale, chord progression, melody, bass line, voicing, note envelopes, timbres
and drum kit (kick pitch and decay, snare, hat colour, pattern), rendered as
additive harmonic notes plus synthesised percussion: enough spectral
structure (harmonic peaks, onsets, repetition) to exercise the fingerprinter
the way real music does, without two seeds sharing sample-identical material
the way two renderings from one fixed instrument set would.
"""

from __future__ import annotations

import numpy as np

from fingerprint.params import SAMPLE_RATE

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
_KICK_PATTERNS = (  # sixteenth steps in a bar that carry a kick
    (0, 4, 8, 12),
    (0, 8),
    (0, 6, 8),
    (0, 3, 8, 10),
    (0, 7, 10),
)
_VOICINGS = ((0, 2, 4), (0, 2, 4, 7), (0, 4, 9), (2, 4, 7))  # scale degrees above the chord root
_HAT_STEPS = ((2, 6, 10, 14), tuple(range(0, 16, 2)), tuple(range(16)), (2, 3, 6, 7, 10, 11, 14, 15))


def _note(freq: float, length: int, sr: int, harmonics: np.ndarray, attack: float, decay: float) -> np.ndarray:
    t = np.arange(length) / sr
    partials = np.arange(1, harmonics.shape[0] + 1)[:, None]
    keep = (freq * partials[:, 0] < sr / 2)[:, None]
    tone = (keep * harmonics[:, None] * np.sin(2 * np.pi * freq * partials * t)).sum(axis=0)
    return tone * np.minimum(1.0, t / attack) * np.exp(-t * decay)


def _kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    length = int(sr * rng.uniform(0.08, 0.2))
    t = np.arange(length) / sr
    start, end = rng.uniform(70, 140), rng.uniform(40, 70)
    freq = end + (start - end) * np.exp(-t / rng.uniform(0.01, 0.04))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return np.sin(phase) * np.exp(-t / rng.uniform(0.03, 0.1))


def _noise_hit(sr: int, rng: np.random.Generator, seconds: float, decay: float, colour: float) -> np.ndarray:
    length = int(sr * seconds)
    noise = rng.standard_normal(length)
    if colour > 0:  # one-pole low-pass: darker hats and snares
        for i in range(1, length):
            noise[i] = colour * noise[i - 1] + (1 - colour) * noise[i]
    return noise * np.exp(-np.arange(length) / (decay * sr))


def music(seconds: float, seed: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``seconds`` of mono float32 music at ``sr``, peak-normalised to 0.9; same seed, same audio."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n + 2 * sr, np.float64)
    tonic = 98.0 * 2 ** rng.uniform(0.0, 1.0)
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    step = int(sr * 60 / rng.uniform(70, 170) / 4)  # a sixteenth note
    beat = 4 * step
    lead_harm = rng.uniform(0.1, 1.0, 8) / np.arange(1, 9) ** rng.uniform(0.5, 1.5)
    pad_harm = rng.uniform(0.1, 1.0, 5) / np.arange(1, 6) ** rng.uniform(1.0, 2.0)
    bass_harm = rng.uniform(0.2, 1.0, 3) / np.arange(1, 4)
    lead_env = (rng.uniform(0.003, 0.03), rng.uniform(1.5, 6.0))
    pad_env = (rng.uniform(0.02, 0.15), rng.uniform(0.3, 1.5))
    bass_env = (rng.uniform(0.005, 0.02), rng.uniform(2.0, 8.0))
    lead_octave, bass_octave = int(rng.integers(1, 3)), int(rng.integers(-1, 1))
    voicing = _VOICINGS[int(rng.integers(len(_VOICINGS)))]
    progression = rng.integers(0, 7, int(rng.choice([4, 6, 8])))
    melody = rng.integers(0, 14, 16)
    rhythm = rng.choice([1, 1, 2, 2, 4], 16)
    kick = _kick(sr, rng)
    kick_steps = _KICK_PATTERNS[int(rng.integers(len(_KICK_PATTERNS)))]
    hat = _noise_hit(sr, rng, 0.04, rng.uniform(0.004, 0.015), rng.uniform(0.0, 0.6))
    hat_steps = _HAT_STEPS[int(rng.integers(len(_HAT_STEPS)))]
    snare = _noise_hit(sr, rng, 0.15, rng.uniform(0.03, 0.08), rng.uniform(0.2, 0.8)) if rng.random() < 0.7 else None
    swing = int(step * rng.uniform(0.0, 0.25))
    gains = rng.uniform(0.6, 1.4, 5)

    def pitch(degree: int, octave: int) -> float:
        semis = scale[degree % 7] + 12 * (degree // 7 + octave)
        return tonic * 2 ** (semis / 12)

    def add(at: int, sound: np.ndarray, gain: float) -> None:
        end = min(out.shape[0], at + sound.shape[0])
        if at < end:
            out[at:end] += gain * sound[: end - at]

    pos, note_index, bar = 0, 0, 0
    while pos < n:
        chord = int(progression[bar % progression.shape[0]])
        inversion = int(rng.integers(0, len(voicing)))  # voicings vary from bar to bar
        for v, d in enumerate(voicing):
            octave = 2 if v < inversion else 1
            add(pos, _note(pitch(chord + d, octave), 4 * beat, sr, pad_harm, *pad_env), 0.1 * gains[0])
        for s in range(16):
            at = pos + s * step + (swing if s % 2 else 0)
            if s in kick_steps:
                add(at, kick, 0.5 * gains[1])
            if s in hat_steps:
                add(at, hat, 0.06 * gains[2])
            if snare is not None and s in (4, 12):
                add(at, snare, 0.15 * gains[3])
            if s % 4 == 0:
                add(at, _note(pitch(chord, bass_octave), beat, sr, bass_harm, *bass_env), 0.25 * gains[4])
        mel_pos = pos
        while mel_pos < pos + 4 * beat and mel_pos < n:
            length = int(2 * step * rhythm[note_index % 16])
            f = pitch(int(melody[note_index % 16]) + chord, lead_octave)
            add(mel_pos, _note(f, length, sr, lead_harm, *lead_env), 0.3)
            mel_pos += length
            note_index += 1
        if bar % 2 == 1:  # the tune develops rather than looping
            melody = (melody + rng.integers(-2, 3, 16)) % 14
        pos += 4 * beat
        bar += 1
    out = out[:n]
    peak = np.abs(out).max()
    return (0.9 * out / peak).astype(np.float32) if peak > 0 else out.astype(np.float32)

"""Log-mel patches and their way back to audio (Griffin-Lim).

The GAN works on short log-mel patches: N_MELS bands x PATCH_STEPS steps of
STEP_FRAMES STFT frames (64 ms; a patch lasts about one second), each
normalised to its own loudest cell, so that the network learns spectral
shapes and not recording levels. Steps of 64 ms are fine enough for notes
and drums and spare a small network from learning that a tone lasts: at the
STFT's own 16 ms frames an MLP generator of this size produced speckle. Audio comes back by
spreading each mel band over its linear-frequency bins (the filterbank's
transpose, normalised) and estimating a phase with Griffin-Lim.

Everything runs at the engine's 8 kHz. The STFT here (512 points, 16 ms hop)
is the generator's own, finer in time than the fingerprinter's, and plain
numpy: rendering a few seconds takes milliseconds.
"""

from __future__ import annotations

import numpy as np

from fingerprint.params import SAMPLE_RATE

N_FFT = 512
HOP = 128
N_MELS = 64
STEP_FRAMES = 4
PATCH_STEPS = 16
# The generator builds each band's course over a patch from this many cosines
# (DCT-II shapes, up to 2.5 cycles a second): tones that last and change
# smoothly. A generator free to set every cell learned the cells' spread
# before their correlations and produced speckle.
TEMPORAL_COMPONENTS = 6
MEL_FMIN_HZ = 40.0
MEL_FMAX_HZ = SAMPLE_RATE / 2
# A patch's cells are dB below its loudest cell, mapped from [-DB_RANGE, 0] to [-1, 1].
DB_RANGE = 80.0
GRIFFIN_LIM_ITERATIONS = 16
_WINDOW = np.hanning(N_FFT + 1)[:N_FFT]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank() -> np.ndarray:
    """Triangular filters (N_MELS x N_FFT/2+1), HTK mel scale, each with unit peak."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(MEL_FMIN_HZ)), _hz_to_mel(np.array(MEL_FMAX_HZ)), N_MELS + 2))
    bins = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def temporal_basis() -> np.ndarray:
    """PATCH_STEPS x TEMPORAL_COMPONENTS orthonormal DCT-II basis."""
    t = (np.arange(PATCH_STEPS) + 0.5) / PATCH_STEPS
    basis = np.cos(np.pi * np.arange(TEMPORAL_COMPONENTS)[None, :] * t[:, None])
    return (basis / np.linalg.norm(basis, axis=0)).astype(np.float32)


_MEL = mel_filterbank()
# Back from mel to linear bins: each bin takes the bands that cover it, weighted
# by their filters (a normalised transpose; the exact inverse does not exist).
_UNMEL = _MEL.T / np.maximum(_MEL.sum(axis=0), 1e-9)[:, None]


def stft(samples: np.ndarray) -> np.ndarray:
    """Complex STFT (frames x bins) of a float signal, centred frames, Hann window."""
    padded = np.pad(np.asarray(samples, np.float64), (N_FFT // 2, N_FFT // 2))
    n_frames = 1 + (padded.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    return np.fft.rfft(frames * _WINDOW, axis=1)


def istft(spectrum: np.ndarray, n_samples: int) -> np.ndarray:
    """Inverse of ``stft`` by windowed overlap-add."""
    frames = np.fft.irfft(spectrum, N_FFT, axis=1) * _WINDOW
    n_frames = frames.shape[0]
    length = N_FFT + HOP * (n_frames - 1)
    out = np.zeros(length)
    norm = np.zeros(length)
    step = N_FFT // HOP
    for k in range(step):  # frames k, k + step, ... lie end to end: add them as one run
        chunk = frames[k::step]
        at = k * HOP
        out[at : at + chunk.size] += chunk.reshape(-1)
        norm[at : at + chunk.size] += np.tile(_WINDOW**2, chunk.shape[0])
    out /= np.maximum(norm, 1e-3)
    return out[N_FFT // 2 : N_FFT // 2 + n_samples]


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Mel power in dB (frames x N_MELS) of 8 kHz audio."""
    power = np.abs(stft(samples)) ** 2
    return 10.0 * np.log10(power @ _MEL.T + 1e-10)


def coarse(mel_db: np.ndarray) -> np.ndarray:
    """Frames (frames x N_MELS, dB) to steps of STEP_FRAMES frames by their mean power (a partial step is dropped)."""
    n = mel_db.shape[0] // STEP_FRAMES * STEP_FRAMES
    power = 10.0 ** (mel_db[:n] / 10.0)
    return 10.0 * np.log10(power.reshape(-1, STEP_FRAMES, N_MELS).mean(axis=1) + 1e-10)


def fine(steps_db: np.ndarray) -> np.ndarray:
    """Steps (steps x N_MELS, dB) back to STFT frames, linearly interpolated between step centres."""
    n_frames = steps_db.shape[0] * STEP_FRAMES
    position = np.clip((np.arange(n_frames) + 0.5) / STEP_FRAMES - 0.5, 0, steps_db.shape[0] - 1)
    left = np.minimum(position.astype(int), steps_db.shape[0] - 1)
    right = np.minimum(left + 1, steps_db.shape[0] - 1)
    frac = (position - left)[:, None]
    return (1 - frac) * steps_db[left] + frac * steps_db[right]


def normalise(mel_db: np.ndarray) -> np.ndarray:
    """dB patches (..., frames, N_MELS) to the network's [-1, 1] scale, relative to each patch's maximum."""
    top = mel_db.max(axis=(-2, -1), keepdims=True)
    return np.clip(1.0 + 2.0 * (mel_db - top) / DB_RANGE, -1.0, 1.0).astype(np.float32)


def to_db(patch: np.ndarray) -> np.ndarray:
    """The network's scale back to dB below the maximum."""
    return (np.asarray(patch, np.float64) - 1.0) * DB_RANGE / 2.0


def render(mel_db: np.ndarray, rng: np.random.Generator, iterations: int = GRIFFIN_LIM_ITERATIONS) -> np.ndarray:
    """Audio (float32, peak 0.9) whose log-mel spectrogram approximates ``mel_db`` (frames x N_MELS).

    Griffin-Lim from a random phase drawn from ``rng``: same generator state,
    same audio.
    """
    magnitude = np.sqrt(10.0 ** (mel_db / 10.0) @ _UNMEL.T)
    n_samples = HOP * (mel_db.shape[0] - 1)
    phase = np.exp(2j * np.pi * rng.random(magnitude.shape))
    audio = istft(magnitude * phase, n_samples)
    for _ in range(iterations):
        rebuilt = stft(audio)
        audio = istft(magnitude * rebuilt / np.maximum(np.abs(rebuilt), 1e-12), n_samples)
    peak = np.max(np.abs(audio), initial=0.0)
    return (0.9 * audio / peak if peak > 0 else audio).astype(np.float32)

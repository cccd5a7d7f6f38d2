"""Short-time power spectrum of engine-rate audio, as small Numba kernels.

The FFT is our own radix-2 kernel rather than numpy/scipy for two reasons:
every frame goes through exactly the same arithmetic whatever the batch
size (pocketfft vectorises across rows, which may round differently), so a
stream fed in chunks yields bit-identical spectra to the whole signal; and
the whole spectrogram runs without the GIL, so the daemon can fingerprint
many streams on worker threads.
"""

from __future__ import annotations

import numba
import numpy as np

from fingerprint.params import FASTMATH, N_FFT, HOP, BIN_LO, BIN_HI

_HALF = N_FFT // 2


def _bit_reverse_table(n: int) -> np.ndarray:
    bits = n.bit_length() - 1
    idx = np.arange(n)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


_WINDOW = np.hanning(N_FFT + 1)[:N_FFT].astype(np.float64)
_REV = _bit_reverse_table(_HALF)
_TWIDDLE = np.exp(-2j * np.pi * np.arange(_HALF // 2) / _HALF)
# Post-processing twiddles that turn the half-length complex FFT of the
# even/odd-interleaved signal into the spectrum of the real signal.
_SPLIT = np.exp(-2j * np.pi * np.arange(_HALF + 1) / N_FFT)


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _fft_inplace(z: np.ndarray, rev: np.ndarray, twiddle: np.ndarray) -> None:
    """Iterative radix-2 decimation-in-time FFT of a complex array whose length is a power of two, at least 4."""
    n = z.shape[0]
    for i in range(n):
        j = rev[i]
        if j > i:
            tmp = z[i]
            z[i] = z[j]
            z[j] = tmp
    # The first two stages need no multiplications (twiddles 1 and -i).
    for start in range(0, n, 4):
        a0 = z[start] + z[start + 1]
        a1 = z[start] - z[start + 1]
        b0 = z[start + 2] + z[start + 3]
        b1 = z[start + 2] - z[start + 3]
        b1 = complex(b1.imag, -b1.real)
        z[start] = a0 + b0
        z[start + 2] = a0 - b0
        z[start + 1] = a1 + b1
        z[start + 3] = a1 - b1
    size = 8
    while size <= n:
        half = size // 2
        step = n // size
        for start in range(0, n, size):
            for k in range(half):
                w = twiddle[k * step]
                a = z[start + k]
                b = z[start + k + half] * w
                z[start + k] = a + b
                z[start + k + half] = a - b
        size *= 2


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _log_power_frames(
    samples: np.ndarray,
    n_frames: int,
    window: np.ndarray,
    rev: np.ndarray,
    twiddle: np.ndarray,
    split: np.ndarray,
    hop: int,
    bin_lo: int,
    bin_hi: int,
) -> np.ndarray:
    """Natural log of the power in bins [bin_lo, bin_hi) of each hop-spaced frame."""
    n_fft = window.shape[0]
    half = n_fft // 2
    out = np.empty((n_frames, bin_hi - bin_lo), dtype=np.float32)
    z = np.empty(half + 1, dtype=np.complex128)
    for t in range(n_frames):
        base = t * hop
        for i in range(half):
            z[i] = complex(
                samples[base + 2 * i] * window[2 * i],
                samples[base + 2 * i + 1] * window[2 * i + 1],
            )
        _fft_inplace(z[:half], rev, twiddle)
        z[half] = z[0]  # z is periodic: z[half] == z[0] spares a modulo per bin
        for k in range(bin_lo, bin_hi):
            zk = z[k]
            zc = z[half - k].conjugate()
            x = 0.5 * (zk + zc) - 0.5j * split[k] * (zk - zc)
            out[t, k - bin_lo] = np.log(np.float32(x.real * x.real + x.imag * x.imag + 1e-10))
    return out


def n_frames_for(n_samples: int) -> int:
    """Number of complete analysis frames in a signal of ``n_samples``."""
    if n_samples < N_FFT:
        return 0
    return (n_samples - N_FFT) // HOP + 1


def check_samples(samples: np.ndarray) -> np.ndarray:
    """``samples`` if they are 1-D, float32 and finite; otherwise an error saying what to do instead."""
    if not isinstance(samples, np.ndarray) or samples.ndim != 1:
        raise ValueError(
            f"expected a 1-D numpy array of mono samples, got {type(samples).__name__}"
            f" with shape {getattr(samples, 'shape', None)}"
        )
    if samples.dtype != np.float32:
        raise TypeError(
            f"expected float32 samples at the engine rate, got {samples.dtype};"
            " decode with fingerprint.audio or convert with .astype(np.float32)"
        )
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise ValueError(f"{bad} of {samples.shape[0]} samples are NaN or infinite; audio must be finite")
    return samples


def log_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Log power spectrogram, shape (frames, bins), of mono float32 engine-rate audio.

    Frame ``t`` covers samples ``[t*HOP, t*HOP + N_FFT)``; only complete frames
    are returned, so a signal shorter than one frame gives zero rows. Bins are
    the engine's analysis band ``[BIN_LO, BIN_HI)``.
    """
    samples = np.ascontiguousarray(check_samples(samples))
    return _log_power_frames(
        samples, n_frames_for(samples.shape[0]), _WINDOW, _REV, _TWIDDLE, _SPLIT, HOP, BIN_LO, BIN_HI
    )

"""Streaming polyphase resampling, chunk by chunk, equal to ``scipy.signal.resample_poly`` of the whole.

A live stream arrives at its own rate (44.1 kHz from a web stream, 16 kHz
from a phone line) in chunks of any size; the extractor needs the engine's
rate. Resampling each chunk on its own would put filter edges into every
chunk boundary, and the landmarks of a stream would then depend on how it
was cut. ``StreamingResampler`` keeps the input the filter still needs
between chunks, so its output for any chunking is the output of
``resample_poly(whole_signal, up, down)`` (same Kaiser-windowed FIR, same
alignment, zeros outside the signal), produced as soon as the inputs each
output sample needs have arrived (a delay of about 10 input samples at the
higher of the two rates' reduced factors).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.signal import firwin

from fingerprint.params import SAMPLE_RATE


@numba.njit(nogil=True, cache=True)
def _polyphase(
    buf: np.ndarray, buf_start: int, h: np.ndarray, up: int, down: int, delay: int, n_from: int, n_to: int
) -> np.ndarray:
    """Outputs ``n_from..n_to-1``: y[n] = sum_i h[n*down + delay - i*up] * x[i] (x = 0 outside ``buf``)."""
    taps = h.shape[0]
    out = np.empty(n_to - n_from, np.float64)
    for j in range(n_to - n_from):
        t = (n_from + j) * down + delay
        i_hi = t // up
        i_lo = -((taps - 1 - t) // up)  # ceil((t - taps + 1) / up)
        lo = max(i_lo, buf_start)
        hi = min(i_hi, buf_start + buf.shape[0] - 1)
        acc = 0.0
        for i in range(lo, hi + 1):
            acc += h[t - i * up] * buf[i - buf_start]
        out[j] = acc
    return out


class StreamingResampler:
    """Resample a stream from ``rate`` to ``target`` in chunks; ``flush`` at the end."""

    def __init__(self, rate: int, target: int = SAMPLE_RATE) -> None:
        if rate <= 0 or target <= 0:
            raise ValueError(f"sample rates must be positive, got {rate} and {target}")
        g = math.gcd(int(rate), int(target))
        self.rate, self.target = int(rate), int(target)
        self.up, self.down = self.target // g, self.rate // g
        half_len = 10 * max(self.up, self.down)  # as resample_poly designs it
        self._h = (
            np.ones(1)
            if self.identity
            else firwin(2 * half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
        )
        self._delay = half_len
        self._buf = np.zeros(0, np.float64)
        self._buf_start = 0  # absolute input index of _buf[0]
        self._seen = 0  # input samples fed so far
        self._next = 0  # next output index to produce

    @property
    def identity(self) -> bool:
        return self.up == self.down

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Output samples (float32) that ``samples`` completes."""
        x = np.asarray(samples, dtype=np.float64).ravel()
        if self.identity:
            self._seen += x.shape[0]
            return x.astype(np.float32)
        self._buf = np.concatenate((self._buf, x))
        self._seen += x.shape[0]
        # Output n needs inputs up to (n*down + delay) // up, which must be < seen.
        ready = -((self._delay - self._seen * self.up) // self.down)  # ceil((seen*up - delay) / down)
        return self._produce(max(ready, self._next))

    def flush(self) -> np.ndarray:
        """The remaining output, with zeros after the last input (as ``resample_poly``)."""
        total = -(-(self._seen * self.up) // self.down)  # ceil(seen * up / down)
        if self.identity:
            return np.zeros(0, np.float32)
        return self._produce(max(total, self._next))

    def _produce(self, n_to: int) -> np.ndarray:
        out = _polyphase(self._buf, self._buf_start, self._h, self.up, self.down, self._delay, self._next, n_to)
        self._next = n_to
        keep_from = max(0, -((self._h.shape[0] - 1 - (self._next * self.down + self._delay)) // self.up))
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :].copy()
            self._buf_start = keep_from
        return out.astype(np.float32)

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

from fingerprint.params import FASTMATH, SAMPLE_RATE


@numba.njit(nogil=True, cache=True, fastmath=FASTMATH)
def _polyphase(
    buf: np.ndarray, buf_start: int, phases: np.ndarray, lengths: np.ndarray, up: int, down: int, delay: int,
    n_from: int, n_to: int,
) -> np.ndarray:
    """Outputs ``n_from..n_to-1``: y[n] = sum_i h[n*down + delay - i*up] * x[i] (x = 0 outside ``buf``).

    ``phases[p, :lengths[p]]`` are the taps that meet the inputs of an output
    of phase p = (n*down + delay) mod up, in input order, so that each output
    is one contiguous dot product (vectorised). Only outputs whose inputs
    reach past the signal's start or end take the guarded loop, whatever the
    chunking, so chunking does not change a single bit of the output.
    """
    out = np.empty(n_to - n_from, np.float64)
    buf_end = buf_start + buf.shape[0]
    for j in range(n_to - n_from):
        t = (n_from + j) * down + delay
        p = t % up
        length = lengths[p]
        first = t // up - length + 1  # input index met by phases[p, 0]
        taps = phases[p]
        acc = 0.0
        if first >= buf_start and first + length <= buf_end:
            base = first - buf_start
            for k in range(length):
                acc += taps[k] * buf[base + k]
        else:
            for k in range(length):
                i = first + k
                if buf_start <= i < buf_end:
                    acc += taps[k] * buf[i - buf_start]
        out[j] = acc
    return out


def polyphase_taps(h: np.ndarray, up: int) -> tuple[np.ndarray, np.ndarray]:
    """(phases, lengths): phase p's taps h[p + k*up], last k first (the order of the inputs they meet)."""
    lengths = np.array([(h.shape[0] - 1 - p) // up + 1 for p in range(up)], np.int64)
    phases = np.zeros((up, int(lengths.max())), np.float64)
    for p in range(up):
        phases[p, : lengths[p]] = h[p :: up][: lengths[p]][::-1]
    return phases, lengths


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
        self._phases, self._lengths = polyphase_taps(self._h, self.up)
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
        out = _polyphase(
            self._buf, self._buf_start, self._phases, self._lengths, self.up, self.down, self._delay, self._next, n_to
        )
        self._next = n_to
        keep_from = max(0, -((self._h.shape[0] - 1 - (self._next * self.down + self._delay)) // self.up))
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :].copy()
            self._buf_start = keep_from
        return out.astype(np.float32)

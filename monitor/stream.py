"""One stream's live processing: chunks in, play events out. Pure apart from the matcher it is given.

Per stream: a streaming resampler to the engine's rate, the engine's
streaming extractor (query density), a bounded window of recent landmarks,
and a ``PlayTracker``. Every ``hop_s`` of audio the last ``window_s`` of
landmarks is matched (the matcher's threshold is calibrated for windows of
that length) and the matches go to the tracker as evidence in stream time.

Audio is continuous within a *segment*: consecutive sequence numbers at one
sample rate. Stream time of a segment's audio is its first chunk's capture
time plus samples elapsed, so capture-clock jitter does not stretch it.

- the next sequence number: appended to the segment;
- a lower number whose audio ends no later than what we already have: a
  duplicate or replay (at-least-once delivery), dropped and counted;
- a higher number (chunks lost, capture restarted), 0 after a later capture
  time (capture restarted from scratch), or a new sample rate: the segment
  ends and a new one starts at this chunk (extractor and resampler reset);
  plays are bridged if the break is shorter than the tracker's gap;
- any other lower number (time goes back while the sequence does too, or a
  jump beyond ``max_sequence_jump``) is refused: the worker dead-letters it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from fingerprint.landmarks import QUERY, Extractor, Landmarks
from fingerprint.matcher import Matcher
from fingerprint.params import FRAME_RATE, SAMPLE_RATE
from fingerprint.resample import StreamingResampler
from monitor.chunks import Chunk
from monitor.tracker import Evidence, PlayEvent, PlayTracker

WINDOW_S = 10.0
HOP_S = 5.0
MAX_SEQUENCE_JUMP = 1_000_000  # chunks; more is corruption, not a capture gap


class Accepted(Enum):
    APPENDED = "appended"
    NEW_SEGMENT = "new_segment"  # a gap, a capture restart or a rate change
    DUPLICATE = "duplicate"


class SequenceError(ValueError):
    """A chunk whose sequence number cannot belong to this stream's history."""

    reason = "bad_sequence"


@dataclass(frozen=True)
class Fed:
    """What one chunk did."""

    accepted: Accepted
    events: list[PlayEvent]
    windows: int  # windows matched


class StreamProcessor:
    """Feed it a stream's chunks in order; ``matcher`` is called for the current one at each window."""

    def __init__(
        self,
        stream: str,
        matcher: Callable[[], Matcher],
        tracker: PlayTracker | None = None,
        window_s: float = WINDOW_S,
        hop_s: float = HOP_S,
    ) -> None:
        self.stream = stream
        self._matcher = matcher
        self.tracker = tracker or PlayTracker(stream)
        self._window = int(round(window_s * FRAME_RATE))
        self._hop = int(round(hop_s * FRAME_RATE))
        self._next_seq: int | None = None
        self._rate = 0
        self._origin_s = 0.0  # stream time of the segment's first sample
        self._samples = 0  # samples of the segment at its own rate
        self._resampler: StreamingResampler | None = None
        self._extractor: Extractor | None = None
        self._recent = Landmarks.empty()
        self._next_decision = self._window
        self._restored_end_s = 0.0
        self.segments = 0

    @property
    def end_s(self) -> float:
        """Stream time just after the audio received so far."""
        return self._origin_s + self._samples / self._rate if self._rate else 0.0

    def feed(self, chunk: Chunk) -> Fed:
        accepted = self._place(chunk)
        if accepted is Accepted.DUPLICATE:
            return Fed(accepted, [], 0)
        events: list[PlayEvent] = []
        if accepted is Accepted.NEW_SEGMENT:
            events += self._finish_segment()
            events += self.tracker.advance(chunk.captured_ns / 1e9)
            self._start_segment(chunk)
        assert self._resampler is not None and self._extractor is not None
        self._next_seq = chunk.sequence + 1
        self._samples += chunk.samples.shape[0]
        audio = self._resampler.feed(chunk.samples.astype(np.float32) / 32768.0)
        fresh = self._extractor.feed(audio)
        if len(fresh):
            self._recent = Landmarks.concat([self._recent, fresh])
        windows = 0
        while self._extractor.frames_final >= self._next_decision:
            events += self._decide(self._next_decision)
            self._next_decision += self._hop
            windows += 1
        events += self.tracker.advance(self.end_s)
        return Fed(accepted, events, windows)

    def close(self) -> list[PlayEvent]:
        """The stream ended for good: match what is left of it, then end its plays."""
        return self._finish_segment() + self.tracker.close()

    def _finish_segment(self) -> list[PlayEvent]:
        """Flush the extractor and match the segment's tail, which no full hop reached."""
        if self._extractor is None or self._resampler is None:
            return []
        tail = self._extractor.feed(self._resampler.flush())
        fresh = Landmarks.concat([tail, self._extractor.flush()])
        self._extractor = None
        if len(fresh):
            self._recent = Landmarks.concat([self._recent, fresh])
        last = self._next_decision - self._hop  # end of the last window matched
        if not len(self._recent) or int(self._recent.t.max()) < last:
            return []
        return self._decide(int(self._recent.t.max()) + 1)

    def snapshot(self) -> dict[str, object]:
        """What must survive a crash (JSON-able): open plays and where the stream is.

        The extractor's context is not kept: after a restart the first new
        chunk starts a segment, and the open plays bridge its one-window
        warm-up (well under the tracker's gap).
        """
        return {"tracker": self.tracker.snapshot(), "next_seq": self._next_seq, "end_s": self.end_s}

    @classmethod
    def restore(
        cls, state: dict[str, object], matcher: Callable[[], Matcher], window_s: float = WINDOW_S, hop_s: float = HOP_S
    ) -> "StreamProcessor":
        tracker = PlayTracker.restore(state["tracker"])  # type: ignore[arg-type]
        processor = cls(tracker.stream, matcher, tracker, window_s, hop_s)
        processor._next_seq = state["next_seq"]  # type: ignore[assignment]
        processor._restored_end_s = float(state["end_s"])  # type: ignore[arg-type]
        return processor

    def _place(self, chunk: Chunk) -> Accepted:
        if self._next_seq is None:
            return Accepted.NEW_SEGMENT
        seq = chunk.sequence
        if self._extractor is None:  # restored after a restart: nothing to append to
            if seq < self._next_seq and chunk.end_ns / 1e9 <= self._restored_end_s + 1.0:
                return Accepted.DUPLICATE
            return Accepted.NEW_SEGMENT
        if seq == self._next_seq and chunk.rate == self._rate:
            return Accepted.APPENDED
        if seq < self._next_seq and chunk.end_ns / 1e9 <= self.end_s + 1.0:
            return Accepted.DUPLICATE
        if self._next_seq < seq <= self._next_seq + MAX_SEQUENCE_JUMP:
            return Accepted.NEW_SEGMENT
        if seq == self._next_seq or (seq == 0 and chunk.captured_ns / 1e9 >= self.end_s):
            return Accepted.NEW_SEGMENT  # a rate change, or a capture that restarted from scratch
        raise SequenceError(
            f"stream {self.stream!r}: sequence {seq} does not follow {self._next_seq - 1}"
            f" (capture time {chunk.captured_ns / 1e9:.3f}, stream at {self.end_s:.3f})"
        )

    def _start_segment(self, chunk: Chunk) -> None:
        self.segments += 1
        self._rate = chunk.rate
        self._origin_s = chunk.captured_ns / 1e9
        self._samples = 0
        self._resampler = StreamingResampler(chunk.rate, SAMPLE_RATE)
        self._extractor = Extractor(QUERY)
        self._recent = Landmarks.empty()
        self._next_decision = self._window

    def _decide(self, end_frame: int) -> list[PlayEvent]:
        """Match the window of landmarks anchored in [end_frame - window, end_frame)."""
        start_frame = end_frame - self._window
        keep = self._recent.t >= start_frame
        self._recent = self._recent.take(keep)
        window = self._recent.take(self._recent.t < end_frame)
        matches = self._matcher().match(window) if len(window) else []
        origin = self._origin_s
        evidence = [
            Evidence(
                track=m.track,
                start=origin + m.query_start,
                end=origin + m.query_end,
                ref_start=m.ref_start,
                ref_end=m.ref_end,
                speed=m.speed,
                score=m.score,
                count=m.count,
            )
            for m in matches
        ]
        return self.tracker.observe(origin + end_frame / FRAME_RATE, evidence)

"""One stream's live processing: chunks in, play events out. Pure apart from the matcher it is given.

Per stream: a streaming resampler to the engine's rate, the engine's
streaming extractor (live density: one target per anchor fewer than a file
query, see ``fingerprint.params.LIVE_TARGETS``), a bounded window of recent
landmarks with their index hits, and a ``PlayTracker``. Each landmark is looked up in
the index once, when the extractor returns it. Whenever at least ``step_s``
more audio has come (in practice: with every chunk of a second or more), the
hits of the last ``window_s`` of landmarks are voted on and the matches go to
the tracker as evidence in stream time. Deciding with every chunk rather
than on a fixed grid is what keeps detection latency near the chunk
length. The vote reaches the newest audio: a landmark waits up to 1.6 s
for its look-ahead (``fingerprint.params.LOOKAHEAD_FRAMES``) before it is
final, so the extractor's provisional landmarks of that tail (as if the
audio ended there) are looked up and voted on with the final ones, and the
next window reaches back to where the final ones ended, so that every
stretch of audio is also voted on with its final landmarks. The window is 5 s, not the 10 s that
offline matching uses: a play that has just begun is found in the newest
seconds of audio whatever the window, a 10 s window only voted every hit
twice (on a simulated broadcast against a 47 h catalogue: the same plays
found, detection latency no worse, half the voting time), and a play in
progress needs only each window to confirm its timeline. A play found late
(under talk-over, after a long crossfade) is reported from where it began,
not from where the window that found it begins: ``ONSET_S`` of final
landmarks before the window are kept, and a match of a recording not in
play follows its line back through them (``Matcher.onset``).

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

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from fingerprint.landmarks import LIVE, Extractor, Landmarks
from fingerprint.matcher import Hits, Match, Matcher
from fingerprint.params import FRAME_RATE, SAMPLE_RATE
from fingerprint.resample import StreamingResampler
from monitor.chunks import Chunk
from monitor.tracker import Evidence, Play, PlayEvent, PlayTracker

WINDOW_S = 5.0
STEP_S = 1.0  # least new final audio between two decisions
KEEP_S = 60.0  # hits on recordings in play kept this long, to weigh a play's timeline against a rival
# Final landmarks kept this long before a window, so that a play found late
# (under talk-over, after a long crossfade) is reported from where it began
# (``Matcher.onset``): plays are found up to about 10 s after their start.
ONSET_S = 15.0
# A rival timeline takes over a play when the audio before it fits the rival
# at least this many times as well as the play's own timeline: if the play's
# timeline still fits the newest window, by far (the play is on the other
# occurrence of a repeated passage, found first); if not, as well (a loop the
# play locked onto has run out; a play that really moved, the DJ jumping or
# the recording starting again, has no support on the rival's timeline
# before the move). Music that repeats itself all through supports many
# timelines about equally: these margins keep the play where it is. A play
# whose timeline has run past its recording's end while the recording still
# matches was on a later occurrence of a passage: a rival that keeps the
# play inside the recording takes it over whatever the margins say.
REALIGN_WHILE_SUPPORTED = 1.5
REALIGN_WHEN_LOST = 1.0
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
    """Feed it a stream's chunks in order; ``matcher`` gives the current matcher (it changes with the catalogue)."""

    def __init__(
        self,
        stream: str,
        matcher: Callable[[], Matcher],
        tracker: PlayTracker | None = None,
        window_s: float = WINDOW_S,
        step_s: float = STEP_S,
    ) -> None:
        self.stream = stream
        self._matcher = matcher
        self.tracker = tracker or PlayTracker(stream)
        self._window = int(round(window_s * FRAME_RATE))
        self._step = max(1, int(round(step_s * FRAME_RATE)))
        self._next_seq: int | None = None
        self._rate = 0
        self._origin_s = 0.0  # stream time of the segment's first sample
        self._samples = 0  # samples of the segment at its own rate
        self._resampler: StreamingResampler | None = None
        self._extractor: Extractor | None = None
        # The window's final landmarks and their index hits (by ``_hits_of``), in
        # the pieces the extractor gave them: a decision drops whole pieces
        # and joins the rest once, instead of copying the window with every chunk.
        self._recent: list[Landmarks] = []
        self._hits: list[Hits] = []
        self._past: deque[Landmarks] = deque()  # final landmarks of the ONSET_S before ``_recent``, as they left it
        self._hits_of: Matcher | None = None
        self._decided = 0  # end frame of the last window decided
        self._settled = 0  # frames final at that decision: the vote after it starts no later
        self._kept: dict[str, Hits] = {}  # the last KEEP_S of hits on each recording in play
        self._kept_of: Matcher | None = None
        self._anchors = np.empty(0, np.int64)  # distinct anchor frames of the last KEEP_S
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
        self._add(self._extractor.feed(audio))
        windows = 0
        if self._extractor.frames_seen - self._decided >= self._step:
            extractor = self._extractor
            events += self._decide(extractor.frames_seen, extractor.frames_final, extractor.provisional())
            windows = 1
        events += self.tracker.advance(self.end_s)
        return Fed(accepted, events, windows)

    def close(self) -> list[PlayEvent]:
        """The stream ended for good: match what is left of it, then end its plays."""
        return self._finish_segment() + self.tracker.close()

    def _finish_segment(self) -> list[PlayEvent]:
        """Flush the extractor and match the segment's tail, which no full hop reached."""
        if self._extractor is None or self._resampler is None:
            return []
        self._add(self._extractor.feed(self._resampler.flush()))
        self._add(self._extractor.flush())
        self._extractor = None
        if not self._recent or int(self._recent[-1].t.max()) < self._settled:
            return []
        return self._decide(int(self._recent[-1].t.max()) + 1)

    def snapshot(self) -> dict[str, object]:
        """What must survive a crash (JSON-able): open plays and where the stream is.

        The extractor's context is not kept: after a restart the first new
        chunk starts a segment, and the open plays bridge its one-window
        warm-up (well under the tracker's gap).
        """
        return {"tracker": self.tracker.snapshot(), "next_seq": self._next_seq, "end_s": self.end_s}

    @classmethod
    def restore(
        cls, state: dict[str, object], matcher: Callable[[], Matcher], window_s: float = WINDOW_S, step_s: float = STEP_S
    ) -> "StreamProcessor":
        tracker = PlayTracker.restore(state["tracker"])  # type: ignore[arg-type]
        processor = cls(tracker.stream, matcher, tracker, window_s, step_s)
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
        self._extractor = Extractor(LIVE)
        self._recent = []
        self._hits = []
        self._past.clear()
        self._decided = 0
        self._settled = 0
        self._kept = {}
        self._anchors = np.empty(0, np.int64)

    def _add(self, fresh: Landmarks) -> None:
        """Keep new landmarks, looked up in the current index (all of the window again if the index changed)."""
        if not len(fresh):
            return
        matcher = self._matcher()
        self._recent.append(fresh)
        self._anchors = np.concatenate([self._anchors, np.unique(fresh.t)])
        if matcher is self._hits_of:
            hits = matcher.lookup(fresh)
            self._hits.append(hits)
            if matcher is self._kept_of:
                self._kept = {track: Hits.concat([kept, matcher.hits_of(hits, track)]) for track, kept in self._kept.items()}
        else:
            self._hits = [matcher.lookup(part) for part in self._recent]
            self._hits_of = matcher

    def _keep(self, matcher: Matcher, window_hits: Hits) -> None:
        """Keep the hits on the recordings in play (a recording new to play starts with ``window_hits``)."""
        if matcher is not self._kept_of:
            self._kept, self._kept_of = {}, matcher  # frames of another index
        horizon = self._settled - int(KEEP_S * FRAME_RATE)
        kept = {}
        for track in {p.track for p in self.tracker.plays}:
            hits = self._kept.get(track)
            if hits is None:
                hits = matcher.hits_of(window_hits, track)
            kept[track] = hits.take(hits.t >= horizon)
        self._kept = kept
        self._anchors = self._anchors[self._anchors >= horizon]

    def _decide(self, end_frame: int, settled: int | None = None, tail: Landmarks | None = None) -> list[PlayEvent]:
        """Vote on the hits of the landmarks anchored in [end_frame - window, end_frame).

        ``tail``: the extractor's provisional landmarks, anchored from
        ``settled`` (its final frame) up to ``end_frame``; looked up for this vote only
        (the final ones replace them when the look-ahead has been heard).
        The window reaches back to the frames that were provisional at the
        previous vote, so that every frame is voted on with its final
        landmarks once (else a play whose first seconds fell in a
        provisional tail would be reported from a later start).
        """
        start_frame = min(end_frame - self._window, self._settled) if self._decided else end_frame - self._window
        self._decided = end_frame
        self._settled = end_frame if settled is None else settled
        self._drop_before(start_frame)
        while self._past and self._past[0].t.max() < start_frame - ONSET_S * FRAME_RATE:
            self._past.popleft()
        matcher = self._matcher()
        if matcher is not self._hits_of:
            self._hits = [matcher.lookup(part) for part in self._recent]
            self._hits_of = matcher
        recent, hits = self._recent, self._hits
        if tail is not None and len(tail):
            tail = tail.take(tail.t >= start_frame)
            recent, hits = [*recent, tail], [*hits, matcher.lookup(tail)]
        window = Landmarks.concat(recent)  # every landmark kept, final or provisional, is anchored before ``end_frame``
        all_hits = Hits.concat(hits)
        final_hits = all_hits.take(slice(0, sum(len(h) for h in self._hits)))
        if not len(window):
            events = self.tracker.observe(self._origin_s + end_frame / FRAME_RATE, [])
            self._keep(matcher, final_hits)
            return events
        query_t = window.t
        matches = self._keep_timelines(matcher, all_hits, window, matcher.vote(all_hits, query_t, landmarks=window))
        matches = self._onsets(matcher, window, matches)
        events = self.tracker.observe(self._origin_s + end_frame / FRAME_RATE, [self._evidence(m) for m in matches])
        self._keep(matcher, final_hits)
        return events

    def _drop_before(self, start_frame: int) -> None:
        """Move the window's landmarks anchored before ``start_frame`` to ``_past`` and drop their hits."""
        while self._recent and int(self._recent[0].t[0]) < start_frame:
            part, hits = self._recent[0], self._hits[0]
            if int(part.t[-1]) < start_frame:  # the whole piece (landmarks come ordered by anchor frame)
                self._past.append(self._recent.pop(0))
                self._hits.pop(0)
                continue
            cut = int(np.searchsorted(part.t, start_frame))
            self._past.append(part.take(slice(0, cut)))
            self._recent[0] = part.take(slice(cut, None))
            self._hits[0] = hits.take(hits.t >= start_frame)
            break

    def _keep_timelines(self, matcher: Matcher, hits: Hits, window: Landmarks, matches: list[Match]) -> list[Match]:
        """Prefer, for each play in progress, the window's match on the play's own timeline.

        In music that repeats itself the vote can place a window one
        repetition away from where the play is; if the hits also support
        the play's predicted alignment, that is the evidence (otherwise the
        tracker would split one play in two). A jump or a restart leaves no
        support at the predicted alignment, and the vote's match stands.
        The play's own timeline can be the wrong one, though: found first on
        the other occurrence of a repeated passage. So a rival match is
        weighed against the play on the kept audio before it (``_fits_better``),
        and a rival that fits it better takes the play over (``realign``),
        followed back along its line as a new play's match is (``_onsets``):
        the audio before the repeated passage, which the first alignment
        could not explain, is where the play began.
        """
        query_t = window.t
        t0_s = self._origin_s + int(query_t.min()) / FRAME_RATE
        tolerance = self.tracker.ref_tolerance_s
        for play in self.tracker.plays:
            if not play.announced:
                continue  # a candidate timeline (the tracker's) has to win the vote on its own
            ref_s = play.expected_ref(t0_s)
            on_line = matcher.verify(hits, query_t, play.track, ref_s, play.speed, landmarks=window)
            agrees = lambda m: abs(m.ref_start - (ref_s + play.speed * (m.query_start - (t0_s - self._origin_s)))) <= tolerance  # noqa: E731
            rivals = [m for m in matches if m.track == play.track and not agrees(m)]
            if rivals and self._fits_better(matcher, play, rivals[0], on_line is not None):
                onset = matcher.onset(self._heard(window), rivals[0])  # the true timeline may reach back before the play
                self.tracker.realign(play, self._evidence(onset))
                continue
            if on_line is None:
                continue
            others = [m for m in matches if m.track != play.track or agrees(m)]
            if not any(m.track == play.track for m in others):
                others.append(on_line)
            matches = others
        return matches

    def _onsets(self, matcher: Matcher, window: Landmarks, matches: list[Match]) -> list[Match]:
        """Matches of recordings not in play moved back to where they began to be heard (``Matcher.onset``).

        A play starts at its first match; the window that found it may
        begin after the play did. A recording already in play is left
        alone: its plays hold their own starts, and a new timeline of it
        (a repeat) must begin after them.
        """
        playing = {p.track for p in self.tracker.plays}
        if all(m.track in playing for m in matches):
            return matches
        heard = self._heard(window)
        return [m if m.track in playing else matcher.onset(heard, m) for m in matches]

    def _heard(self, window: Landmarks) -> Landmarks:
        """The final landmarks kept before ``window``, then ``window``: as far back as a match is followed."""
        return Landmarks.concat([*self._past, window])

    def _fits_better(self, matcher: Matcher, play: Play, rival: Match, supported: bool) -> bool:
        """Whether the kept audio of ``play`` before ``rival`` fits the rival's timeline better (see REALIGN_*)."""
        kept = self._kept.get(play.track)
        if kept is None or matcher is not self._kept_of:
            return False

        def line(at_s: float) -> float:  # the rival's recording time at segment time ``at_s``
            return rival.ref_start + rival.speed * (at_s - rival.query_start)

        tolerance = self.tracker.ref_tolerance_s
        started = play.start - self._origin_s
        length = matcher.track_seconds(play.track)
        if line(started) < -tolerance or line(play.last_seen - self._origin_s) > length + tolerance:
            return False  # the play would lie outside the recording
        if play.expected_ref(self._origin_s + rival.query_end) > length + tolerance:
            return True  # the play's timeline ran past the recording's end: it was on another occurrence of a passage
        hi = rival.query_start * FRAME_RATE
        lo = started * FRAME_RATE
        anchors = self._anchors[(self._anchors >= lo) & (self._anchors < hi)]
        before = kept.take((kept.t >= lo) & (kept.t < hi))
        if not len(anchors) or not len(before):
            return False
        t0 = int(anchors[0]) / FRAME_RATE
        on_rival = matcher.verify(before, anchors, play.track, line(t0), rival.speed)
        if on_rival is None:
            return False
        on_play = matcher.verify(before, anchors, play.track, play.expected_ref(self._origin_s + t0), play.speed)
        factor = REALIGN_WHILE_SUPPORTED if supported else REALIGN_WHEN_LOST
        return on_play is None or on_rival.count >= factor * on_play.count

    def _evidence(self, m: Match) -> Evidence:
        """A window's match in stream time."""
        origin = self._origin_s
        return Evidence(
            track=m.track,
            start=origin + m.query_start,
            end=origin + m.query_end,
            ref_start=m.ref_start,
            ref_end=m.ref_end,
            speed=m.speed,
            score=m.score,
            count=m.count,
        )

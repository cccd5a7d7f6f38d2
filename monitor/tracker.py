"""Per-stream play tracking: match evidence in, plays out. A pure state machine, no I/O.

The worker matches a sliding window of a stream's recent audio against the
catalogue and hands each window's matches to its stream's ``PlayTracker`` as
``Evidence`` in stream time (capture clock, seconds since the epoch). The
tracker turns that into plays:

- a play starts with the first evidence of a recording (or after
  ``min_windows`` consistent windows) and ``play.started`` goes out at once,
  for low-latency alerting;
- evidence of the same recording whose reference position agrees with the
  play's timeline (reference = anchor + speed x elapsed stream time, within
  ``ref_tolerance_s``) extends it, so talk-over or a dropout shorter than
  ``max_gap_s`` does not split a play;
- evidence that disagrees (the recording restarted back to back, the DJ
  jumped ahead) ends the current play and starts another once a second
  window confirms the new timeline with at least ``CONFIRM_NEW_S`` of audio
  the first did not hear (with short chunks consecutive windows overlap
  mostly, and would confirm each other's error): one window alone is more
  often a vote that placed a repeated section (a chorus, a loop) at its
  other occurrence, and ending the play on it would count one play twice; and when the play
  it supersedes had less than ``CORRECTION_S`` of evidence, that play was a
  wrong first alignment (typically found under talk-over), so it takes the
  new timeline and stays one play under its first ``event_id``;
- a longer play locked onto the other occurrence of a passage its recording
  repeats (a loop, a copied chorus) is moved onto its true timeline by
  ``realign``, which the stream processor calls when the audio heard so far
  fits that timeline better: the tracker holds no audio to judge it; the
  true timeline can reach back before the play's announced start (the
  audio before the passage fits it and not the other occurrence), and the
  play then reports that earlier start, still under its first ``event_id``;
- a play ends when no evidence has extended it for ``max_gap_s`` of stream
  time (evidence stopped: the station moved on, or switched stream), and
  ``play.ended`` carries the final figures: stream start and end, the
  reference range played, best score, speed;
- plays of different recordings are independent, so crossfades overlap.

``event_id`` is a UUID derived from (stream, track, play start in ms, as
announced in ``play.started``), so a worker that replays the same audio
after a crash produces the same ids.
``snapshot``/``restore`` give a JSON-able state for a changelog.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, fields, replace

EVENT_NAMESPACE = uuid.UUID("6f0b7d52-32a4-4c1e-9a51-2f3c1e0b9d17")
STARTED = "play.started"
ENDED = "play.ended"
CORRECTION_S = 10.0  # a play with less evidence than this, superseded by a confirmed timeline, is corrected, not ended
CONFIRM_NEW_S = 2.5  # stream seconds of evidence past its first window that confirm a new timeline of a playing recording


@dataclass(frozen=True)
class Evidence:
    """One window's match of one recording, in stream time."""

    track: str
    start: float  # stream time (s since epoch) of the first matched audio
    end: float  # stream time of the last matched audio
    ref_start: float  # recording time (s) at ``start``
    ref_end: float
    speed: float  # recording seconds per stream second
    score: float
    count: int  # aligned landmarks


@dataclass(frozen=True)
class Play:
    stream: str
    track: str
    started_at: float  # stream time of the first evidence, as announced: the event_id's
    last_seen: float  # stream time of the last evidence (the play's end so far)
    ref_start: float
    ref_end: float
    speed: float  # count-weighted mean over the evidence
    score: float  # best window score
    count: int  # aligned landmarks, summed over windows
    windows: int  # windows of evidence
    announced: bool  # play.started sent
    confirm: int = 1  # windows needed before play.started: 2 for a new timeline of a recording already playing
    first_end: float = 0.0  # stream time its first window's evidence ended (the second must reach CONFIRM_NEW_S past it)
    began_at: float | None = None  # an earlier start found after play.started (``realign``): reported from then on

    @property
    def event_id(self) -> str:
        return play_event_id(self.stream, self.track, self.started_at)

    @property
    def start(self) -> float:
        """Stream time the play began, as best known: what events and rows report."""
        return self.started_at if self.began_at is None else self.began_at

    @property
    def duration(self) -> float:
        return self.last_seen - self.start

    def expected_ref(self, at: float) -> float:
        """Recording position this play predicts at stream time ``at``."""
        return self.ref_end + self.speed * (at - self.last_seen)


@dataclass(frozen=True)
class PlayEvent:
    kind: str  # STARTED or ENDED
    play: Play

    @property
    def event_id(self) -> str:
        return self.play.event_id


def play_event_id(stream: str, track: str, started_at: float) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{stream}\x1f{track}\x1f{round(started_at * 1000)}"))


class PlayTracker:
    """Plays of one stream; feed it ``observe`` per matched window, ``advance`` as time passes."""

    def __init__(
        self,
        stream: str,
        max_gap_s: float = 20.0,
        ref_tolerance_s: float = 2.0,
        min_windows: int = 1,
    ) -> None:
        if max_gap_s <= 0 or ref_tolerance_s <= 0 or min_windows < 1:
            raise ValueError("max_gap_s and ref_tolerance_s must be positive, min_windows at least 1")
        self.stream = stream
        self.max_gap_s = max_gap_s
        self.ref_tolerance_s = ref_tolerance_s
        self.min_windows = min_windows
        self._plays: list[Play] = []

    @property
    def plays(self) -> tuple[Play, ...]:
        """Plays in progress (announced or still gathering evidence)."""
        return tuple(self._plays)

    def observe(self, now: float, evidence: list[Evidence]) -> list[PlayEvent]:
        """Take one window's matches (the window ends at stream time ``now``).

        Evidence is weighed before time advances: the first window after a
        talk-over ends well after the audio that bridges the gap.
        """
        events: list[PlayEvent] = []
        by_track: dict[str, list[Evidence]] = {}
        for e in evidence:
            by_track.setdefault(e.track, []).append(e)
        for track, found in by_track.items():
            events += self._observe_track(track, sorted(found, key=lambda e: -e.score))
        return events + self.advance(now)

    def advance(self, now: float) -> list[PlayEvent]:
        """Stream time reached ``now`` (with or without evidence): end plays evidence left behind."""
        events: list[PlayEvent] = []
        keep: list[Play] = []
        for play in self._plays:
            if now - play.last_seen > self.max_gap_s:
                if play.announced:
                    events.append(PlayEvent(ENDED, play))
            else:
                keep.append(play)
        self._plays = keep
        return events

    def close(self) -> list[PlayEvent]:
        """The stream stopped: end every play at its last evidence."""
        events = [PlayEvent(ENDED, p) for p in self._plays if p.announced]
        self._plays = []
        return events

    def realign(self, play: Play, e: Evidence) -> None:
        """Move announced ``play`` onto the timeline of ``e``; it stays one play, under its ``event_id``.

        Its reference range is recomputed on the new timeline. If ``e``
        starts before the play (the audio before the passage that misled the
        first alignment fits the new timeline), the play begins there from
        now on: ``play.ended`` reports that start. Evidence is not added:
        ``e`` goes to ``observe`` as usual, and now extends the play.
        """
        if not play.announced or play.track != e.track:
            raise ValueError("realign moves an announced play onto evidence of its own recording")

        def line(at: float) -> float:
            return e.ref_start + e.speed * (at - e.start)

        start = min(e.start, play.start)
        began_at = start if start < play.start else play.began_at
        moved = replace(play, began_at=began_at, ref_start=line(start), ref_end=line(play.last_seen), speed=e.speed)
        self._plays[self._plays.index(play)] = moved

    def _observe_track(self, track: str, found: list[Evidence]) -> list[PlayEvent]:
        current = [p for p in self._plays if p.track == track]
        for play in current:
            fits = [
                e
                for e in found
                if e.start - play.last_seen <= self.max_gap_s
                and abs(e.ref_start - play.expected_ref(e.start)) <= self.ref_tolerance_s
            ]
            if fits:
                return self._extend(play, fits[0])
        best = found[0]
        if any(best.start <= p.last_seen - self.ref_tolerance_s for p in current):
            return []  # disagreeing evidence from within a play: not a new play
        for play in current:
            if not play.announced:  # a candidate timeline this evidence contradicts
                self._plays.remove(play)
        running = any(p.announced and best.start - p.last_seen <= self.max_gap_s for p in current)
        play = Play(
            stream=self.stream,
            track=track,
            started_at=best.start,
            last_seen=best.end,
            ref_start=best.ref_start,
            ref_end=best.ref_end,
            speed=best.speed,
            score=best.score,
            count=best.count,
            windows=1,
            announced=False,
            confirm=2 if running else 1,
            first_end=best.end,
        )
        self._plays.append(play)
        return self._maybe_announce(play)

    def _extend(self, play: Play, e: Evidence) -> list[PlayEvent]:
        if play.announced:  # the running timeline goes on: candidates against it were wrong
            self._plays = [p for p in self._plays if p.track != play.track or p.announced]
        count = play.count + e.count
        grown = replace(
            play,
            last_seen=max(play.last_seen, e.end),
            ref_end=e.ref_end if e.end >= play.last_seen else play.ref_end,
            speed=(play.speed * play.count + e.speed * e.count) / count,
            score=max(play.score, e.score),
            count=count,
            windows=play.windows + 1,
        )
        self._plays[self._plays.index(play)] = grown
        return self._maybe_announce(grown)

    def _maybe_announce(self, play: Play) -> list[PlayEvent]:
        if play.announced or play.windows < max(self.min_windows, play.confirm):
            return []
        if play.confirm > 1 and play.last_seen - play.first_end < CONFIRM_NEW_S:
            return []
        # The recording's announced plays are over: superseded by this timeline, or long without evidence.
        over = [p for p in self._plays if p.track == play.track and p.announced]
        young = [
            p for p in over
            if p.duration < CORRECTION_S and play.started_at - p.last_seen <= self.max_gap_s
        ]  # fmt: skip
        self._plays = [p for p in self._plays if not any(p is q for q in (play, *over))]
        ended = [PlayEvent(ENDED, p) for p in over if not any(p is y for y in young)]
        if young:  # a wrong first alignment: the play takes the confirmed timeline
            first = min(young, key=lambda p: p.started_at)
            corrected = replace(
                play,
                started_at=first.started_at,
                began_at=first.began_at,
                ref_start=play.ref_start - play.speed * (play.started_at - first.start),
                score=max(first.score, play.score),
                count=first.count + play.count,
                windows=first.windows + play.windows,
                announced=True,
                confirm=1,
            )
            self._plays.append(corrected)
            return ended
        announced = replace(play, announced=True)
        self._plays.append(announced)
        return ended + [PlayEvent(STARTED, announced)]

    def snapshot(self) -> dict[str, object]:
        """JSON-able state: settings and plays in progress."""
        return {
            "stream": self.stream,
            "max_gap_s": self.max_gap_s,
            "ref_tolerance_s": self.ref_tolerance_s,
            "min_windows": self.min_windows,
            "plays": [asdict(p) for p in self._plays],
        }

    @classmethod
    def restore(cls, state: dict[str, object]) -> "PlayTracker":
        tracker = cls(
            str(state["stream"]),
            float(state["max_gap_s"]),  # type: ignore[arg-type]
            float(state["ref_tolerance_s"]),  # type: ignore[arg-type]
            int(state["min_windows"]),  # type: ignore[call-overload]
        )
        known = {f.name for f in fields(Play)}
        # Fields a newer release added are dropped: each one has a default and
        # only refines the tracking, so a worker rolled back keeps the plays.
        tracker._plays = [Play(**{k: v for k, v in p.items() if k in known}) for p in state["plays"]]  # type: ignore[union-attr]
        return tracker

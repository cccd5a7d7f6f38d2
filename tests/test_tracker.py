"""monitor.tracker: plays from window evidence, case by case (pure, no services)."""

from __future__ import annotations

import json

import pytest

from monitor.tracker import ENDED, STARTED, Evidence, PlayEvent, PlayTracker, play_event_id

T0 = 1_780_000_000.0  # stream time, seconds since the epoch
WINDOW, HOP = 10.0, 5.0


def windows(track: str, start: float, end: float, ref0: float = 0.0, speed: float = 1.0, score: float = 0.4) -> list[tuple[float, Evidence]]:
    """(window end, evidence) for a recording heard from stream time ``start`` to ``end``, ref ``ref0`` at ``start``."""
    out = []
    t = start
    while t + WINDOW <= end + 1e-9:
        out.append((t + WINDOW, Evidence(track, t, t + WINDOW, ref0 + speed * (t - start), ref0 + speed * (t + WINDOW - start), speed, score, 40)))
        t += HOP
    return out


def run(tracker: PlayTracker, *streams: list[tuple[float, Evidence]], until: float | None = None) -> list[PlayEvent]:
    """Feed evidence window by window (merged by window end), then let time pass to ``until``."""
    by_end: dict[float, list[Evidence]] = {}
    for stream in streams:
        for end, e in stream:
            by_end.setdefault(round(end, 6), []).append(e)
    events: list[PlayEvent] = []
    last = T0
    for end in sorted(by_end):
        events += tracker.observe(end, by_end[end])
        last = end
    t = last
    while until is not None and t < until:
        t = min(until, t + HOP)
        events += tracker.observe(t, [])
    return events


def summary(events: list[PlayEvent]) -> list[tuple[str, str, float, float]]:
    return [(e.kind, e.play.track, round(e.play.start - T0, 3), round(e.play.last_seen - T0, 3)) for e in events]


def test_one_play_starts_at_once_and_ends_after_the_gap() -> None:
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 120, ref0=30.0, speed=1.03), until=T0 + 200)
    assert [e.kind for e in events] == [STARTED, ENDED]
    started, ended = events[0].play, events[1].play
    assert started.started_at == T0 and started.windows == 1
    assert ended.started_at == T0 and ended.last_seen == pytest.approx(T0 + 120)
    assert ended.ref_start == pytest.approx(30.0) and ended.ref_end == pytest.approx(30.0 + 1.03 * 120)
    assert ended.speed == pytest.approx(1.03) and ended.windows == 23
    assert started.event_id == ended.event_id == play_event_id("fm", "a", T0)
    assert tracker.plays == ()


def test_play_ends_only_when_max_gap_has_passed() -> None:
    tracker = PlayTracker("fm", max_gap_s=20.0)
    assert [e.kind for e in run(tracker, windows("a", T0, T0 + 60))] == [STARTED]
    assert tracker.advance(T0 + 80) == []  # exactly 20 s after the last evidence: still going
    (ended,) = tracker.advance(T0 + 80.001)
    assert ended.kind == ENDED and ended.play.last_seen == T0 + 60


def test_talk_over_shorter_than_the_gap_does_not_split_the_play() -> None:
    tracker = PlayTracker("fm", max_gap_s=20.0)
    before = windows("a", T0, T0 + 40)
    after = windows("a", T0 + 55, T0 + 120, ref0=55.0)  # 15 s of DJ talk-over: no evidence
    assert summary(run(tracker, before, after, until=T0 + 200)) == [(STARTED, "a", 0.0, 10.0), (ENDED, "a", 0.0, 120.0)]


def test_dropout_longer_than_the_gap_gives_two_plays() -> None:
    tracker = PlayTracker("fm", max_gap_s=20.0)
    events = run(tracker, windows("a", T0, T0 + 40), windows("a", T0 + 75, T0 + 120, ref0=75.0), until=T0 + 200)
    assert summary(events) == [
        (STARTED, "a", 0.0, 10.0),
        (ENDED, "a", 0.0, 40.0),
        (STARTED, "a", 75.0, 85.0),
        (ENDED, "a", 75.0, 120.0),
    ]
    assert events[0].event_id != events[2].event_id


def test_crossfade_overlaps_two_plays() -> None:
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 100, ref0=100.0), windows("b", T0 + 90, T0 + 200), until=T0 + 300)
    assert summary(events) == [
        (STARTED, "a", 0.0, 10.0),
        (STARTED, "b", 90.0, 100.0),
        (ENDED, "a", 0.0, 100.0),
        (ENDED, "b", 90.0, 200.0),
    ]


def test_recording_repeated_back_to_back_gives_two_plays() -> None:
    tracker = PlayTracker("fm")
    first = windows("a", T0, T0 + 60)
    second = windows("a", T0 + 60, T0 + 120)  # starts again from the top
    events = run(tracker, first, second, until=T0 + 200)
    assert summary(events) == [
        (STARTED, "a", 0.0, 10.0),
        (ENDED, "a", 0.0, 60.0),  # when the second window confirms the new timeline
        (STARTED, "a", 60.0, 75.0),
        (ENDED, "a", 60.0, 120.0),
    ]
    assert events[1].play.ref_end == pytest.approx(60.0) and events[3].play.ref_start == pytest.approx(0.0)


def test_window_straddling_a_repeat_with_both_offsets_keeps_the_running_play() -> None:
    tracker = PlayTracker("fm")
    run(tracker, windows("a", T0, T0 + 60))
    straddle = [Evidence("a", T0 + 55, T0 + 60, 55.0, 60.0, 1.0, 0.3, 20), Evidence("a", T0 + 60, T0 + 65, 0.0, 5.0, 1.0, 0.5, 30)]
    assert tracker.observe(T0 + 65, straddle) == []  # the consistent one extends; the other is not a play yet
    assert tracker.observe(T0 + 70, [Evidence("a", T0 + 60, T0 + 70, 0.0, 10.0, 1.0, 0.5, 40)]) == []  # a new timeline, once
    events = tracker.observe(T0 + 75, [Evidence("a", T0 + 65, T0 + 75, 5.0, 15.0, 1.0, 0.5, 40)])
    assert [(e.kind, e.play.started_at - T0) for e in events] == [(ENDED, 0.0), (STARTED, 60.0)]


def test_one_window_on_another_timeline_does_not_split_the_play() -> None:
    """A vote that places a repeated section at its other occurrence, once, inside a play: still one play."""
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 40))
    events += tracker.observe(T0 + 45, [Evidence("a", T0 + 41, T0 + 45, 95.0, 99.0, 1.0, 0.3, 15)])  # the chorus, 54 s later
    events += run(tracker, windows("a", T0 + 40, T0 + 90, ref0=40.0), until=T0 + 200)
    assert summary(events) == [(STARTED, "a", 0.0, 10.0), (ENDED, "a", 0.0, 90.0)]


def test_a_new_timeline_confirmed_twice_ends_the_play_at_its_last_evidence() -> None:
    """The DJ jumps ahead within the recording: the first play ends where its evidence ended, the second starts at the jump."""
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 40), windows("a", T0 + 40, T0 + 80, ref0=120.0), until=T0 + 200)
    assert summary(events) == [
        (STARTED, "a", 0.0, 10.0),
        (ENDED, "a", 0.0, 40.0),
        (STARTED, "a", 40.0, 55.0),
        (ENDED, "a", 40.0, 80.0),
    ]
    assert events[2].play.ref_start == pytest.approx(120.0)


def test_overlapping_windows_confirm_a_new_timeline_only_with_new_audio() -> None:
    """1 s chunks: windows a second apart share most of their audio, so two of them on a repeat's
    other occurrence are one observation; the new timeline needs evidence 2.5 s past its first window."""
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 40))
    repeat = [Evidence("a", T0 + 39, T0 + 41 + k, 95.0, 97.0 + k, 1.0, 0.3, 15) for k in range(4)]
    for k, e in enumerate(repeat[:3]):
        events += tracker.observe(T0 + 41 + k, [e])
    assert summary(events) == [(STARTED, "a", 0.0, 10.0)]  # three windows, 2 s of new audio: not confirmed
    events += tracker.observe(T0 + 44, [repeat[3]])
    assert summary(events) == [(STARTED, "a", 0.0, 10.0), (ENDED, "a", 0.0, 40.0), (STARTED, "a", 39.0, 44.0)]


def test_a_wrong_first_alignment_is_corrected_not_counted_twice() -> None:
    """Found first at a repeated section's other occurrence (under talk-over), then on its true timeline: one play."""
    tracker = PlayTracker("fm")
    wrong = [(T0 + 10, Evidence("a", T0 + 4, T0 + 10, 150.0, 156.0, 1.0, 0.2, 12))]
    events = run(tracker, wrong, windows("a", T0 + 10, T0 + 60, ref0=40.0), until=T0 + 200)
    assert summary(events) == [(STARTED, "a", 4.0, 10.0), (ENDED, "a", 4.0, 60.0)]
    assert events[0].event_id == events[1].event_id
    ended = events[1].play
    assert ended.ref_start == pytest.approx(34.0) and ended.ref_end == pytest.approx(90.0)  # the true timeline
    assert ended.windows == len(windows("a", T0 + 10, T0 + 60)) + 1


def test_a_short_play_then_the_recording_again_after_the_gap_are_two_plays() -> None:
    """A jingle heard for 6 s, then again 30 s later: the second is a play of its own, not a correction of the first."""
    tracker = PlayTracker("fm", max_gap_s=20.0)
    first = [(T0 + 10, Evidence("j", T0 + 4, T0 + 10, 0.0, 6.0, 1.0, 0.4, 20))]
    events = run(tracker, first, windows("j", T0 + 40, T0 + 60, ref0=0.0), until=T0 + 200)
    assert summary(events) == [
        (STARTED, "j", 4.0, 10.0),
        (ENDED, "j", 4.0, 10.0),
        (STARTED, "j", 40.0, 50.0),
        (ENDED, "j", 40.0, 60.0),
    ]


def test_stream_switching_mid_recording_ends_the_play_at_the_last_evidence() -> None:
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 47, ref0=12.0), windows("b", T0 + 47, T0 + 100, ref0=80.0), until=T0 + 200)
    ended_a = [e.play for e in events if e.kind == ENDED and e.play.track == "a"]
    assert len(ended_a) == 1 and ended_a[0].last_seen == pytest.approx(T0 + 45) and ended_a[0].ref_end == pytest.approx(57.0)
    assert ("b", 47.0) in [(e.play.track, e.play.started_at - T0) for e in events if e.kind == STARTED]


def test_partial_play_of_one_window_is_a_play() -> None:
    tracker = PlayTracker("fm")
    events = run(tracker, windows("jingle", T0, T0 + 10, ref0=3.0), until=T0 + 60)
    assert summary(events) == [(STARTED, "jingle", 0.0, 10.0), (ENDED, "jingle", 0.0, 10.0)]


def test_min_windows_holds_back_announcement_and_drops_lone_hits() -> None:
    tracker = PlayTracker("fm", min_windows=2)
    lone = tracker.observe(T0 + 10, [Evidence("x", T0, T0 + 10, 50.0, 60.0, 1.0, 0.2, 12)])
    assert lone == [] and len(tracker.plays) == 1
    assert tracker.advance(T0 + 100) == []  # never confirmed: vanishes without events
    events = run(tracker, windows("a", T0 + 100, T0 + 130), until=T0 + 200)
    assert summary(events) == [(STARTED, "a", 100.0, 115.0), (ENDED, "a", 100.0, 130.0)]


def test_speed_is_the_count_weighted_mean_and_score_the_best() -> None:
    tracker = PlayTracker("fm")
    tracker.observe(T0 + 10, [Evidence("a", T0, T0 + 10, 0.0, 10.2, 1.02, 0.3, 10)])
    tracker.observe(T0 + 15, [Evidence("a", T0 + 5, T0 + 15, 5.1, 15.3, 1.04, 0.6, 30)])
    (play,) = tracker.plays
    assert play.speed == pytest.approx((1.02 * 10 + 1.04 * 30) / 40) and play.score == 0.6 and play.count == 40


def test_close_ends_everything() -> None:
    tracker = PlayTracker("fm")
    run(tracker, windows("a", T0, T0 + 30), windows("b", T0 + 20, T0 + 40))
    assert sorted(e.play.track for e in tracker.close()) == ["a", "b"]
    assert tracker.plays == ()


def test_snapshot_restore_continues_identically() -> None:
    evidence = windows("a", T0, T0 + 100, ref0=7.0, speed=0.98)
    whole = PlayTracker("fm")
    expected = run(whole, evidence, until=T0 + 200)
    part = PlayTracker("fm")
    first = run(part, evidence[:8])
    resumed = PlayTracker.restore(json.loads(json.dumps(part.snapshot())))
    rest = run(resumed, evidence[8:], until=T0 + 200)
    assert [(e.kind, e.event_id, e.play) for e in first + rest] == [(e.kind, e.event_id, e.play) for e in expected]


def test_event_ids_are_deterministic_and_distinct() -> None:
    assert play_event_id("fm", "a", T0) == play_event_id("fm", "a", T0 + 0.0001)
    ids = {play_event_id(s, t, T0 + d) for s in ("fm", "am") for t in ("a", "b") for d in (0.0, 1.0)}
    assert len(ids) == 8


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        PlayTracker("fm", max_gap_s=0)
    with pytest.raises(ValueError):
        PlayTracker("fm", min_windows=0)


def test_realign_moves_a_play_onto_another_timeline_under_its_event_id() -> None:
    """The stream processor found the play on a repeated passage's other occurrence; realigned, it is one play on the true timeline."""
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0, T0 + 40, ref0=100.0))
    (play,) = tracker.plays
    true = Evidence("a", T0 + 40, T0 + 45, 80.0, 85.0, 1.0, 0.4, 30)
    tracker.realign(play, true)
    events += tracker.observe(T0 + 45, [true]) + tracker.close()
    assert summary(events) == [(STARTED, "a", 0.0, 10.0), (ENDED, "a", 0.0, 45.0)]
    assert events[0].event_id == events[1].event_id
    assert (events[1].play.ref_start, events[1].play.ref_end) == pytest.approx((40.0, 85.0))


def test_realign_onto_a_timeline_reaching_back_revises_the_start_not_the_event_id() -> None:
    """The true timeline's evidence reaches 6 s before the play's announced start (the audio before the repeated
    passage fits it): play.ended reports that start under the event_id play.started announced."""
    tracker = PlayTracker("fm")
    events = run(tracker, windows("a", T0 + 10, T0 + 40, ref0=100.0))
    (play,) = tracker.plays
    true = Evidence("a", T0 + 4, T0 + 45, 44.0, 85.0, 1.0, 0.4, 60)
    tracker.realign(play, true)
    snapshot = json.loads(json.dumps(tracker.snapshot()))
    restored = PlayTracker.restore(snapshot)
    assert restored.plays == tracker.plays
    events += restored.observe(T0 + 45, [true]) + restored.close()
    assert summary(events) == [(STARTED, "a", 10.0, 20.0), (ENDED, "a", 4.0, 45.0)]
    assert events[1].event_id == events[0].event_id == play_event_id("fm", "a", T0 + 10)
    assert (events[1].play.ref_start, events[1].play.ref_end) == pytest.approx((44.0, 85.0))
    assert events[1].play.duration == pytest.approx(41.0)


def test_a_rolled_back_worker_keeps_the_play_and_its_event_id_without_the_revised_start() -> None:
    """A release without ``began_at`` drops it from the snapshot: the play goes on under its event_id, from its
    announced start."""
    tracker = PlayTracker("fm")
    run(tracker, windows("a", T0 + 10, T0 + 40, ref0=100.0))
    (play,) = tracker.plays
    tracker.realign(play, Evidence("a", T0 + 4, T0 + 45, 44.0, 85.0, 1.0, 0.4, 60))
    snapshot = tracker.snapshot()
    for p in snapshot["plays"]:
        del p["began_at"]
    (restored,) = PlayTracker.restore(snapshot).plays
    assert restored.event_id == play.event_id and restored.start == T0 + 10


def test_realign_refuses_a_candidate_or_another_recording() -> None:
    tracker = PlayTracker("fm", min_windows=2)
    tracker.observe(T0 + 10, [Evidence("a", T0, T0 + 10, 0.0, 10.0, 1.0, 0.4, 40)])
    (candidate,) = tracker.plays
    with pytest.raises(ValueError, match="announced"):
        tracker.realign(candidate, Evidence("a", T0, T0 + 10, 50.0, 60.0, 1.0, 0.4, 40))
    tracker.observe(T0 + 15, [Evidence("a", T0 + 5, T0 + 15, 5.0, 15.0, 1.0, 0.4, 40)])
    (play,) = tracker.plays
    with pytest.raises(ValueError, match="own recording"):
        tracker.realign(play, Evidence("b", T0 + 5, T0 + 15, 5.0, 15.0, 1.0, 0.4, 40))

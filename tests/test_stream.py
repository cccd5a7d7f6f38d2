"""monitor.stream: a stream's chunks to play events, with the real engine on synthesised audio (no services)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fingerprint import matcher as matcher_mod
from fingerprint.bench.degrade import talk_over
from fingerprint.index import IndexBuilder
from fingerprint.landmarks import Landmarks, extract
from fingerprint.matcher import MAX_KEY_POSTINGS, Hits, Match, Matcher
from fingerprint.resample import StreamingResampler
from fingerprint.spectrum import n_frames_for
from fingerprint.synth import music
from monitor.chunks import decode, encode
from monitor.simulate import speech_like
from monitor.stream import WINDOW_S, Accepted, SequenceError, StreamProcessor
from monitor.tracker import ENDED, STARTED, Play, PlayEvent

T0_NS = 1_780_000_000 * 10**9
RATE = 16000


@pytest.fixture(scope="module")
def catalogue() -> tuple[Matcher, dict[str, np.ndarray]]:
    """Three 60 s recordings at 16 kHz (the index is built from their 8 kHz versions)."""
    builder = IndexBuilder()
    audio = {}
    for seed, name in ((11, "a"), (12, "b"), (13, "c")):
        x16 = music(60.0, seed, sr=RATE)
        r = StreamingResampler(RATE)
        x8 = np.concatenate((r.feed(x16), r.flush()))
        builder.add(name, extract(x8), n_frames_for(x8.shape[0]))
        audio[name] = x16
    return Matcher(builder.freeze()), audio


def broadcast(audio: dict[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, float, float, float]]]:
    """8 s of noise, 'a' from 10 s for 40 s, 'b' from its start crossfaded in for 30 s, 10 s of noise.

    Returns the samples and the truth: (track, stream start s, stream end s, ref start s).
    """
    rng = np.random.default_rng(5)
    noise = lambda s: (0.05 * rng.standard_normal(int(s * RATE))).astype(np.float32)  # noqa: E731
    a = audio["a"][10 * RATE : 50 * RATE]
    b = audio["b"][: 30 * RATE]
    fade = 2 * RATE
    mix = np.concatenate((a[:-fade], a[-fade:] * np.linspace(1, 0, fade) + b[:fade] * np.linspace(0, 1, fade), b[fade:]))
    x = np.concatenate((noise(8), mix, noise(10))).astype(np.float32)
    return x, [("a", 8.0, 48.0, 10.0), ("b", 46.0, 76.0, 0.0)]


def chunks(x: np.ndarray, sizes: list[int], first_seq: int = 0, t0_ns: int = T0_NS, rate: int = RATE):
    start, seq = 0, first_seq
    i = 0
    while start < x.shape[0]:
        n = sizes[i % len(sizes)]
        part = x[start : start + n]
        yield decode(*encode("fm", seq, t0_ns + round(start * 1e9 / rate), rate, part))
        start += n
        seq += 1
        i += 1


def plays(events: list[PlayEvent]) -> dict[str, tuple[float, float, float]]:
    return {e.play.track: (e.play.started_at - T0_NS / 1e9, e.play.last_seen - T0_NS / 1e9, e.play.ref_start) for e in events if e.kind == ENDED}


def test_broadcast_gives_each_play_with_its_times(catalogue) -> None:
    matcher, audio = catalogue
    x, truth = broadcast(audio)
    proc = StreamProcessor("fm", lambda: matcher)
    events: list[PlayEvent] = []
    started_at_stream_s = {}
    for chunk in chunks(x, [RATE * 2, 777, RATE * 3 + 5, 12345]):
        fed = proc.feed(chunk)
        assert fed.accepted in (Accepted.APPENDED, Accepted.NEW_SEGMENT)
        for e in fed.events:
            if e.kind == STARTED:
                started_at_stream_s[e.play.track] = proc.end_s - T0_NS / 1e9
        events += fed.events
    events += proc.close()
    found = plays(events)
    assert set(found) == {"a", "b"}
    for track, start, end, ref in truth:
        s, e, r = found[track]
        assert s == pytest.approx(start, abs=2.0) and e == pytest.approx(end, abs=2.0) and r == pytest.approx(ref, abs=2.0)
        assert started_at_stream_s[track] - start <= 8.0  # announced within a few seconds (chunks here are up to 3 s)
    assert [e.kind for e in events].count(STARTED) == 2


def test_chunking_changes_when_plays_are_announced_not_what_they_are(catalogue) -> None:
    """Decisions follow the chunks (every chunk with a second of new audio), so the plays found are the same."""
    matcher, audio = catalogue
    x, _ = broadcast(audio)
    runs = []
    for sizes in ([RATE * 5], [999, 4001, RATE], [RATE // 2]):
        proc = StreamProcessor("fm", lambda: matcher)
        events = [e for c in chunks(x, sizes) for e in proc.feed(c).events] + proc.close()
        assert [(e.kind, e.play.track) for e in events] == [(STARTED, "a"), (STARTED, "b"), (ENDED, "a"), (ENDED, "b")]
        runs.append({e.play.track: e.play for e in events if e.kind == ENDED})
    for other in runs[1:]:
        for track, play in runs[0].items():
            assert other[track].started_at == pytest.approx(play.started_at, abs=1.5)
            assert other[track].last_seen == pytest.approx(play.last_seen, abs=1.5)
            assert other[track].ref_start == pytest.approx(play.ref_start, abs=1.5)
            assert other[track].speed == pytest.approx(play.speed, abs=0.005)


def test_duplicates_are_dropped_and_replays_change_nothing(catalogue) -> None:
    matcher, audio = catalogue
    x, _ = broadcast(audio)
    all_chunks = list(chunks(x, [RATE * 2]))
    proc = StreamProcessor("fm", lambda: matcher)
    events = []
    for i, chunk in enumerate(all_chunks):
        events += proc.feed(chunk).events
        if i % 7 == 3:  # at-least-once delivery: the last few again
            for old in all_chunks[max(0, i - 2) : i + 1]:
                fed = proc.feed(old)
                assert fed.accepted is Accepted.DUPLICATE and fed.events == []
    events += proc.close()
    clean = StreamProcessor("fm", lambda: matcher)
    expected = [e for c in all_chunks for e in clean.feed(c).events] + clean.close()
    assert [(e.kind, e.event_id) for e in events] == [(e.kind, e.event_id) for e in expected]


def test_gap_rate_change_and_restart_start_new_segments(catalogue) -> None:
    matcher, audio = catalogue
    x = audio["c"]
    proc = StreamProcessor("fm", lambda: matcher)
    first = list(chunks(x[: 20 * RATE], [RATE]))
    for c in first:
        proc.feed(c)
    assert proc.segments == 1
    lost = list(chunks(x[22 * RATE : 40 * RATE], [RATE], first_seq=22, t0_ns=T0_NS + 22 * 10**9))
    assert proc.feed(lost[0]).accepted is Accepted.NEW_SEGMENT  # 2 chunks lost
    for c in lost[1:]:
        assert proc.feed(c).accepted is Accepted.APPENDED
    x8 = StreamingResampler(RATE).feed(x[40 * RATE : 60 * RATE])
    rate_change = list(chunks(x8, [8000], first_seq=40, t0_ns=T0_NS + 40 * 10**9, rate=8000))
    assert proc.feed(rate_change[0]).accepted is Accepted.NEW_SEGMENT
    events = [e for c in rate_change[1:] for e in proc.feed(c).events] + proc.close()
    restart = decode(*encode("fm", 0, T0_NS + 100 * 10**9, RATE, np.zeros(RATE, np.int16)))
    assert proc.feed(restart).accepted is Accepted.NEW_SEGMENT  # capture restarted from 0, later in time
    assert proc.segments == 4
    ended = [e.play for e in events if e.kind == ENDED]
    assert len(ended) == 1 and ended[0].track == "c"  # the gaps were bridged: one play
    assert ended[0].started_at - T0_NS / 1e9 == pytest.approx(0.0, abs=2.0)
    assert ended[0].last_seen - T0_NS / 1e9 == pytest.approx(59.0, abs=2.0)


def test_impossible_sequences_are_refused(catalogue) -> None:
    matcher, audio = catalogue
    proc = StreamProcessor("fm", lambda: matcher)
    cs = list(chunks(audio["a"][: 10 * RATE], [RATE], first_seq=100))
    for c in cs:
        proc.feed(c)
    back_in_time_forward = decode(*encode("fm", 50, T0_NS + 30 * 10**9, RATE, np.zeros(RATE, np.int16)))
    with pytest.raises(SequenceError, match="sequence 50 does not follow 109"):
        proc.feed(back_in_time_forward)
    absurd = decode(*encode("fm", 10**12, T0_NS + 11 * 10**9, RATE, np.zeros(RATE, np.int16)))
    with pytest.raises(SequenceError):
        proc.feed(absurd)
    assert proc.feed(cs[-1]).accepted is Accepted.DUPLICATE  # still fine afterwards


def test_silence_gives_no_plays(catalogue) -> None:
    matcher, _ = catalogue
    proc = StreamProcessor("fm", lambda: matcher)
    events = [e for c in chunks(np.zeros(60 * RATE, np.float32), [RATE * 5]) for e in proc.feed(c).events]
    assert events == [] and proc.close() == []


def test_restored_processor_continues_the_same_play(catalogue) -> None:
    """A crash mid-play: state saved after chunk k, the broker replays from an earlier offset."""
    matcher, audio = catalogue
    x, _ = broadcast(audio)
    all_chunks = list(chunks(x, [RATE * 2]))
    whole = StreamProcessor("fm", lambda: matcher)
    expected = [e for c in all_chunks for e in whole.feed(c).events] + whole.close()
    first = StreamProcessor("fm", lambda: matcher)
    events = [e for c in all_chunks[:14] for e in first.feed(c).events]  # 'a' is playing
    assert [e.kind for e in events] == [STARTED]
    state = json.loads(json.dumps(first.snapshot()))
    resumed = StreamProcessor.restore(state, lambda: matcher)
    replayed = [resumed.feed(c) for c in all_chunks[10:14]]  # uncommitted offsets come again
    assert all(f.accepted is Accepted.DUPLICATE for f in replayed)
    events += [e for c in all_chunks[14:] for e in resumed.feed(c).events] + resumed.close()
    assert [(e.kind, e.play.track, e.event_id) for e in events] == [(e.kind, e.play.track, e.event_id) for e in expected]
    ended = {e.play.track: e.play for e in events if e.kind == ENDED}
    want = {e.play.track: e.play for e in expected if e.kind == ENDED}
    for track in want:
        assert ended[track].last_seen == pytest.approx(want[track].last_seen, abs=2.0)


def test_a_play_found_late_is_reported_from_where_it_began(catalogue) -> None:
    """Under a loud voice a play is announced long after it began, by a window that starts after it; it is reported from its start."""
    matcher, audio = catalogue
    strict = Matcher(matcher.index, min_aligned=20)  # with 3 recordings every key is rare: ask for more evidence
    rng = np.random.default_rng(3)
    played = audio["c"][5 * RATE : 45 * RATE].copy()
    played[: 12 * RATE] = talk_over(played[: 12 * RATE], speech_like(12.0, rng, RATE), RATE, -10.0)
    x = np.concatenate(((0.05 * rng.standard_normal(8 * RATE)).astype(np.float32), played))
    proc = StreamProcessor("fm", lambda: strict)
    started = []
    for chunk in chunks(x, [RATE]):
        started += [(proc.end_s - T0_NS / 1e9, e.play) for e in proc.feed(chunk).events if e.kind == STARTED]
    ((announced, play),) = started
    assert announced - 8.0 > WINDOW_S + 2.0
    assert play.started_at - T0_NS / 1e9 == pytest.approx(8.0, abs=1.0)
    assert play.ref_start == pytest.approx(5.0, abs=1.0)


def test_a_looped_section_is_one_play_not_one_per_repetition() -> None:
    """Windows inside a loop match every repetition equally well; the play stays on its own timeline."""
    song = np.concatenate((music(8.0, 31, sr=RATE), np.tile(music(6.0, 33, sr=RATE), 6), music(8.0, 34, sr=RATE)))  # 52 s
    builder = IndexBuilder()
    for name, x16 in (("loop", song), ("other", music(60.0, 32, sr=RATE))):
        r = StreamingResampler(RATE)
        x8 = np.concatenate((r.feed(x16), r.flush()))
        builder.add(name, extract(x8), n_frames_for(x8.shape[0]))
    matcher = Matcher(builder.freeze())
    rng = np.random.default_rng(8)
    x = np.concatenate((0.05 * rng.standard_normal(5 * RATE), song, 0.05 * rng.standard_normal(25 * RATE)))
    proc = StreamProcessor("fm", lambda: matcher)
    events = [e for c in chunks(x.astype(np.float32), [2 * RATE]) for e in proc.feed(c).events] + proc.close()
    assert [(e.kind, e.play.track) for e in events] == [(STARTED, "loop"), (ENDED, "loop")]
    ((start, end, ref),) = plays(events).values()
    assert start == pytest.approx(5.0, abs=2.0) and end == pytest.approx(57.0, abs=2.0) and ref == pytest.approx(0.0, abs=2.0)


def _one_recording(song: np.ndarray) -> Matcher:
    builder = IndexBuilder()
    for name, x16 in (("song", song), ("other", music(60.0, 42, sr=RATE))):
        r = StreamingResampler(RATE)
        x8 = np.concatenate((r.feed(x16), r.flush()))
        builder.add(name, extract(x8), n_frames_for(x8.shape[0]))
    return Matcher(builder.freeze())


def _heard(matcher: Matcher, played: np.ndarray) -> list[PlayEvent]:
    """``played`` between 5 s and 25 s of noise, in 2 s chunks: the events."""
    rng = np.random.default_rng(8)
    x = np.concatenate((0.05 * rng.standard_normal(5 * RATE), played, 0.05 * rng.standard_normal(25 * RATE)))
    proc = StreamProcessor("fm", lambda: matcher)
    return [e for c in chunks(x.astype(np.float32), [2 * RATE]) for e in proc.feed(c).events] + proc.close()


def test_a_play_found_on_a_repeated_passage_s_other_occurrence_moves_to_its_true_timeline() -> None:
    """A passage the recording has twice, heard at its second occurrence, is found first at its first; when
    the music parts from it, the play moves onto the true timeline: one play, one event_id, the true reference range."""
    passage = music(20.0, 36, sr=RATE)
    parts = (music(10.0, 35, sr=RATE), passage, music(10.0, 37, sr=RATE), passage, music(14.0, 38, sr=RATE))
    song = np.concatenate(parts)  # the passage at 10 s and at 40 s
    events = _heard(_one_recording(song), song[40 * RATE :])
    assert [(e.kind, e.play.track) for e in events] == [(STARTED, "song"), (ENDED, "song")]
    started, ended = events
    assert started.play.ref_start == pytest.approx(10.0, abs=2.0)  # the first occurrence: where the fix is needed
    assert ended.event_id == started.event_id
    assert ended.play.started_at - T0_NS / 1e9 == pytest.approx(5.0, abs=2.0)
    assert ended.play.last_seen - T0_NS / 1e9 == pytest.approx(39.0, abs=2.0)
    assert ended.play.ref_start == pytest.approx(40.0, abs=2.0) and ended.play.ref_end == pytest.approx(74.0, abs=2.0)


def test_a_play_moved_to_its_true_timeline_is_reported_from_the_audio_before_the_passage_that_misled_it() -> None:
    """The recording has a passage twice; the stream plays the part before its second occurrence, then the
    passage, then what follows. A play placed on the passage's first occurrence (as a vote under talk-over can
    place it, from the passage's start) is moved onto the true timeline when the music parts, and followed back
    along it: play.ended reports the earlier start, under the event_id play.started announced."""
    passage = music(10.0, 36, sr=RATE)
    song = np.concatenate((music(10.0, 35, sr=RATE), passage, music(10.0, 37, sr=RATE), passage, music(14.0, 38, sr=RATE)))
    matcher = _one_recording(song)  # the passage at 10 s and at 30 s of the recording
    rng = np.random.default_rng(8)
    x = np.concatenate((0.05 * rng.standard_normal(5 * RATE), song[20 * RATE :], 0.05 * rng.standard_normal(25 * RATE)))
    proc = StreamProcessor("fm", lambda: matcher)  # heard from 5 s: 10 s before the passage, the passage at 15 s
    t0 = T0_NS / 1e9
    events: list[PlayEvent] = []
    for c in chunks(x.astype(np.float32), [RATE]):
        events += proc.feed(c).events
        if abs(proc.end_s - t0 - 16.0) < 1e-6:
            (play,) = proc.tracker.plays
            assert play.start - t0 == pytest.approx(5.0, abs=1.0)  # found where it began
            wrong = replace(play, started_at=t0 + 15.0, ref_start=10.0, ref_end=10.0 + (play.last_seen - t0 - 15.0))
            proc.tracker._plays = [wrong]  # as if placed on the passage's first occurrence, from the passage's start
            events = [PlayEvent(STARTED, wrong)]
    events += proc.close()
    assert [e.kind for e in events] == [STARTED, ENDED]
    started, ended = events
    assert ended.event_id == started.event_id
    assert ended.play.start - t0 < 10.0  # moved back through the 10 s the passage's first occurrence did not explain
    assert ended.play.start - t0 > 5.0 - 1.0
    assert ended.play.ref_start == pytest.approx(20.0 + (ended.play.start - t0 - 5.0), abs=1.0)
    assert ended.play.ref_end == pytest.approx(54.0, abs=2.0)


@pytest.mark.parametrize(
    ("play_ref", "rival_ref", "moves"),
    [
        ((50.0, 60.0), 19.0, True),  # the play ran past the 60 s recording's end: it was on another occurrence
        ((50.0, 60.0), 5.0, False),  # ... but the rival would start the play before the recording: a new play
        ((30.0, 40.0), 19.0, False),  # the play still inside its recording: the heard audio has to decide
    ],
)
def test_a_play_that_ran_past_its_recording_s_end_moves_onto_a_rival_timeline(
    play_ref: tuple[float, float], rival_ref: float, moves: bool
) -> None:
    """A play placed on the later occurrence of a passage runs past the recording's end while the music goes
    on: its timeline is impossible, so a rival timeline of the recording that keeps the play inside it takes
    the play over, however weakly the audio before (under talk-over, say) supports the rival."""
    matcher = _one_recording(music(60.0, 39, sr=RATE))
    proc = StreamProcessor("fm", lambda: matcher)
    proc._kept, proc._kept_of = {"song": Hits.concat([])}, matcher  # no audio kept: the rule alone decides
    play = Play("fm", "song", 100.0, 110.0, *play_ref, 1.0, 0.5, 50, 5, True)
    rival = Match("song", 0.5, 20, 109.0, 117.0, rival_ref, rival_ref + 8.0, 1.0)
    assert proc._fits_better(matcher, play, rival, supported=False) is moves


@pytest.mark.parametrize("jump", ["back_to_back", "ahead"])
def test_a_play_that_moves_within_its_recording_is_two_plays(jump: str) -> None:
    """Played to the end and again from the top, or the DJ jumping 20 s ahead: the audio before the move
    does not fit the new timeline, so the play is not moved onto it."""
    song = music(60.0, 39, sr=RATE)
    if jump == "back_to_back":
        played, refs = np.concatenate((song, song)), [0.0, 0.0]
    else:
        played, refs = np.concatenate((song[: 25 * RATE], song[45 * RATE :], music(20.0, 40, sr=RATE))), [0.0, 45.0]
    events = [e for e in _heard(_one_recording(song), played) if e.play.track == "song"]
    assert [e.kind for e in events] == [STARTED, ENDED, STARTED, ENDED]
    assert [e.play.ref_start for e in events if e.kind == ENDED] == pytest.approx(refs, abs=2.0)


def test_a_play_held_mostly_by_common_keys_is_found_by_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording with one landmark in sixteen on rare keys (the rest copied into decoys, as a large catalogue
    makes them common): confirmed on its common keys, it is found from its first seconds; without, seconds later."""
    x16 = music(60.0, 51, sr=RATE)
    r = StreamingResampler(RATE)
    x8 = np.concatenate((r.feed(x16), r.flush()))
    own, n_frames = extract(x8), n_frames_for(x8.shape[0])
    copied = own.take(np.arange(len(own)) % 16 != 0)
    builder = IndexBuilder()
    builder.add("song", own, n_frames)
    for k in range(MAX_KEY_POSTINGS):
        builder.add(f"decoy-{k}", Landmarks(**{**copied._asdict(), "t": (copied.t + 97 * (k + 1)) % n_frames}), n_frames)
    matcher = Matcher(builder.freeze())
    events = _heard(matcher, x16[10 * RATE : 40 * RATE])
    assert [(e.kind, e.play.track) for e in events] == [(STARTED, "song"), (ENDED, "song")]
    started, ended = events
    assert started.play.started_at - T0_NS / 1e9 == pytest.approx(5.0, abs=2.0)
    assert ended.play.ref_start == pytest.approx(10.0, abs=2.0) and ended.play.ref_end == pytest.approx(40.0, abs=2.0)
    monkeypatch.setattr(matcher_mod, "CONFIRM_MIN_RARE", 10**6)
    without = _heard(matcher, x16[10 * RATE : 40 * RATE])
    assert [(e.kind, e.play.track) for e in without] == [(STARTED, "song"), (ENDED, "song")]
    assert without[0].play.first_end >= started.play.first_end + 2.0  # found seconds later
    assert without[1].play.windows < ended.play.windows

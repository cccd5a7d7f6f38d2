"""How the daemon benchmark scores a stream's play.started events against the ground truth (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from monitor.bench import Detection, Stream, score_detections
from monitor.simulate import TruthPlay

ORIGIN_NS = 1_780_000_000 * 10**9


def iso(stream_s: float) -> str:
    return datetime.fromtimestamp(ORIGIN_NS / 1e9 + stream_s, timezone.utc).isoformat().replace("+00:00", "Z")


def started(track: int, start_s: float, detected_s: float, kind: str = "play.started") -> dict[str, object]:
    return {
        "event": kind, "event_id": f"{track}-{start_s}", "stream_id": "fm-1", "track_id": track,
        "started_at": iso(start_s), "detected_at": iso(detected_s),
    }  # fmt: skip


def test_found_missed_false_and_split_plays() -> None:
    truth = [
        TruthPlay("a.flac", 10.0, 70.0, 0.0, 60.0, 1.0, False),
        TruthPlay("b.flac", 80.0, 140.0, 0.0, 60.0, 1.0, True),
        TruthPlay("c.flac", 150.0, 200.0, 0.0, 50.0, 1.0, False),
        TruthPlay("a.flac", 290.0, 330.0, 0.0, 40.0, 1.0, False),  # within 30 s of the end: not scored
    ]
    stream = Stream("fm-1", np.zeros(0, np.int16), truth, ORIGIN_NS, 0.0, level=5)
    events = [
        started(1, 11.0, 16.0),  # a: found, 6 s after its true start, 5 s after its reported one
        started(1, 40.0, 45.0),  # a again inside the same play: split
        started(2, 95.0, 101.0),  # b: found late (talk-over)
        started(9, 120.0, 126.0),  # nothing of track 9 was played: false
        started(1, 300.0, 305.0),  # the unscored play: neither split nor false
    ]  # c is missed
    ((level, d),) = score_detections([stream], events, {"a.flac": 1, "b.flac": 2, "c.flac": 3}, ORIGIN_NS + 310 * 10**9).items()
    assert level == 5
    assert (d.found, d.missed, d.false, d.split) == (2, 1, 1, 1)
    assert d.latencies == [6.0, 21.0]
    assert d.reported == [5.0, 6.0]
    assert d.talk_over == [False, True]
    assert d.start_errors == [1.0, 15.0]
    assert d.start_accuracy() == "8.0 / 14.3 (1 of 2 within 2 s)"  # reported 1 s and 15 s after the true starts


def test_the_start_error_is_the_start_of_the_play_s_last_event() -> None:
    """play.ended can report an earlier start than play.started did (under the same event_id): that one counts."""
    stream = Stream("fm-1", np.zeros(0, np.int16), [TruthPlay("a.flac", 10.0, 70.0, 0.0, 60.0, 1.0, True)], ORIGIN_NS, 0.0, level=1)
    ended = started(1, 16.0, 71.0, kind="play.ended") | {"started_at": iso(10.5)}
    ((_, d),) = score_detections([stream], [started(1, 16.0, 20.0), ended], {"a.flac": 1}, ORIGIN_NS + 200 * 10**9).items()
    assert (d.found, d.split, d.false) == (1, 0, 0)
    assert d.reported == [4.0] and d.start_errors == [0.5]
    assert d.start_accuracy() == "0.5 / 0.5 (1 of 1 within 2 s)"


def test_start_accuracy_of_no_play_is_a_dash() -> None:
    assert Detection(0, 0, 0, 0, [], []).start_accuracy() == "-"

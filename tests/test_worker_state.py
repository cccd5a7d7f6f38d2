"""Worker.handle with saved stream state it cannot read, and tracker state from a newer release (no services)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fingerprint.index import IndexBuilder
from fingerprint.landmarks import extract
from fingerprint.spectrum import n_frames_for
from fingerprint.synth import music
from monitor.chunks import encode
from monitor.events import Recording
from monitor.rights.licences import LicenceBook
from monitor.stream import Accepted, StreamProcessor
from monitor.tracker import Evidence, PlayTracker
from monitor.worker import Worker

T0_NS = 1_780_000_000 * 10**9


@pytest.fixture(scope="module")
def index():
    builder = IndexBuilder()
    x = music(30.0, 21)
    builder.add("1", extract(x), n_frames_for(x.shape[0]))
    return builder.freeze()


def worker(index, saved: dict[str, object] | None) -> Worker:
    return Worker(lambda: index, lambda: LicenceBook(), lambda track: Recording("t", "a", None), saved_state=lambda stream: saved)


def chunk(seq: int) -> tuple[bytes, bytes]:
    return encode("fm", seq, T0_NS + seq * 2 * 10**9, 16000, np.zeros(32000, np.int16))


@pytest.mark.parametrize(
    "saved",
    [
        {"tracker": {"stream": "fm"}, "next_seq": 3, "end_s": 1.0},  # no plays key
        {"tracker": "garbage", "next_seq": 3, "end_s": 1.0},
        {"next_seq": "three"},
        {"tracker": {"stream": "fm", "max_gap_s": 20, "ref_tolerance_s": 2, "min_windows": 1, "plays": [{"track": "1"}]}, "next_seq": 3, "end_s": 1.0},
    ],
    ids=["no-plays", "not-a-dict", "no-tracker", "play-missing-fields"],
)
def test_unreadable_saved_state_starts_the_stream_afresh(index, saved, caplog: pytest.LogCaptureFixture) -> None:
    w = worker(index, saved)
    with caplog.at_level(logging.ERROR, logger="monitor.worker"):
        handled = w.handle(*chunk(3))
    assert handled.dlq_reason is None and handled.accepted is Accepted.NEW_SEGMENT and handled.stream == "fm"
    assert "stream 'fm': its saved state cannot be read" in caplog.text and "starting it afresh" in caplog.text
    assert w.handle(*chunk(4)).accepted is Accepted.APPENDED  # and it goes on


def test_readable_saved_state_is_restored(index) -> None:
    state = StreamProcessor("fm", lambda: None).snapshot() | {"next_seq": 4, "end_s": T0_NS / 1e9 + 8.0}  # type: ignore[arg-type,return-value]
    w = worker(index, state)
    assert w.handle(*chunk(3)).accepted is Accepted.DUPLICATE  # what it had processed before the restart


def test_tracker_state_from_a_newer_release_restores_without_its_new_fields() -> None:
    tracker = PlayTracker("fm")
    tracker.observe(1000.0, [Evidence("a", 990.0, 1000.0, 0.0, 10.0, 1.0, 0.4, 40)])
    state = json.loads(json.dumps(tracker.snapshot()))
    state["plays"][0]["added_by_a_later_release"] = 7
    (play,) = PlayTracker.restore(state).plays
    assert play == tracker.plays[0]

"""The offline latency benchmark's stream runner: a composed broadcast through StreamProcessor, scored (no services)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fingerprint.audio import decode
from fingerprint.index import IndexBuilder
from fingerprint.landmarks import extract
from fingerprint.matcher import CONFIRM_MIN_ALIGNED, CONFIRM_MIN_RARE, Matcher
from fingerprint.params import SAMPLE_RATE
from fingerprint.spectrum import n_frames_for
from monitor.bench import FILE_RATE, Stream, score_detections
from monitor.latency_bench import (
    ALL_KEY_THRESHOLDS,
    EVIDENCE_SECONDS,
    EVIDENCE_THRESHOLDS,
    ORIGIN_NS,
    evidence_onsets,
    evidence_report,
    run_stream,
)
from monitor.simulate import compose, compose_unknown


@pytest.fixture(scope="module")
def bench(recordings: list[Path]) -> tuple[Matcher, dict[str, int], Stream]:
    builder = IndexBuilder()
    ids = {}
    for n, path in enumerate(recordings, start=1):
        x = decode(path, SAMPLE_RATE)
        builder.add(str(n), extract(x), n_frames_for(x.shape[0]))
        ids[str(path)] = n
    composition = compose(recordings, 3.0, seed=11, rate=FILE_RATE)
    pcm = np.clip(np.round(composition.samples * 32767.0), -32768, 32767).astype(np.int16)
    return Matcher(builder.freeze()), ids, Stream("bench-1.0", pcm, composition.truth, ORIGIN_NS, 0.0, level=0)


@pytest.mark.parametrize("chunk_s, phase", [(5.0, 0.0), (5.0, 0.5), (1.0, 0.0)])
def test_every_play_is_found_once_and_announced_after_it_began(bench, chunk_s: float, phase: float) -> None:
    matcher, ids, stream = bench
    events, cpu = run_stream(matcher, stream, chunk_s, phase)
    (d,) = score_detections([stream], events, ids, ORIGIN_NS + round(3 * 60e9)).values()
    scored = sum(p.stream_start <= 150.0 for p in stream.truth)
    assert scored >= 3
    assert (d.found, d.missed, d.false) == (scored, 0, 0)
    assert all(0.0 < x <= 30.0 for x in d.latencies) and all(0.0 < x for x in d.reported)
    assert len(d.talk_over) == d.found
    assert cpu > 0.0


def test_a_broadcast_of_nothing_in_the_catalogue_gives_no_play(bench) -> None:
    matcher, _, _ = bench
    audio = compose_unknown(2.0, seed=4, rate=FILE_RATE)
    assert audio.shape == (2 * 60 * FILE_RATE,) and np.array_equal(audio, compose_unknown(2.0, seed=4, rate=FILE_RATE))
    assert 0.05 < float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) and np.abs(audio).max() <= 0.95
    pcm = np.round(audio * 32767.0).astype(np.int16)
    events, _ = run_stream(matcher, Stream("unknown-1", pcm, [], ORIGIN_NS, 0.0, level=0), 5.0, 0.0)
    assert events == []


def test_evidence_bounds_the_latency_from_below(bench) -> None:
    """The fingerprint's evidence on each true timeline: thresholds reached in order, and never after the play was announced."""
    matcher, ids, stream = bench
    onsets = evidence_onsets(matcher, stream, ids, 3 * 60.0)
    assert len(onsets) == sum(p.stream_start <= 150.0 for p in stream.truth)
    for onset in onsets:
        assert list(onset.reached) == sorted(onset.reached) and 0.0 <= onset.reached[0] < 30.0
        assert list(onset.reached_all) == sorted(onset.reached_all)
        assert onset.reached_all[ALL_KEY_THRESHOLDS.index(10)] <= onset.reached[EVIDENCE_THRESHOLDS.index(10)]  # all keys hold the rare ones
        assert onset.decidable <= onset.reached[EVIDENCE_THRESHOLDS.index(matcher.min_aligned)]
        assert onset.per_second.shape == onset.per_second_all.shape == (EVIDENCE_SECONDS,) and onset.per_second.sum() > 0
        assert np.all(onset.per_second <= onset.per_second_all)
    events, _ = run_stream(matcher, stream, 1.0, 0.0)
    (d,) = score_detections([stream], events, ids, ORIGIN_NS + round(3 * 60e9)).values()
    assert np.median([o.decidable for o in onsets]) <= np.median(d.latencies)
    assert evidence_onsets(matcher, replace(stream, truth=[]), ids, 3 * 60.0) == []
    text = evidence_report(onsets)
    assert text.count("\n| ") == len(EVIDENCE_THRESHOLDS) + len(ALL_KEY_THRESHOLDS) + 2 and "no talk-over" in text
    assert f"| the matcher's rules | 10 rare, or {CONFIRM_MIN_RARE} rare and {CONFIRM_MIN_ALIGNED} in all |" in text

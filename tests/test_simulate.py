"""Simulated broadcasts (monitor/simulate.py): the truth matches the audio; publishing reassembles it."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest

from fingerprint.audio import decode
from fingerprint.bench import degrade
from monitor.chunks import Chunk
from monitor.cli import main
from monitor.kafka.local import LocalBroker
from monitor.simulate import (
    SONG_CROSSFADE_S,
    Composition,
    SimulationError,
    compose,
    simulate,
    speech_like,
    stream_seeds,
)

from broker import fresh_topic
from chunk_topic import consume_chunks

RATE = 16000


@pytest.fixture(scope="module")
def composition(recordings: list[Path]) -> Composition:
    return compose(recordings, 4.0, seed=7)


def test_compose_is_deterministic_for_a_seed(recordings: list[Path], composition: Composition) -> None:
    again = compose(recordings, 4.0, seed=7)
    assert np.array_equal(again.samples, composition.samples) and again.truth == composition.truth
    other = compose(recordings, 4.0, seed=8)
    assert other.truth != composition.truth


def test_broadcast_has_the_length_asked_and_does_not_clip(composition: Composition) -> None:
    assert composition.rate == RATE and composition.samples.shape == (4 * 60 * RATE,)
    assert composition.samples.dtype == np.float32 and np.abs(composition.samples).max() <= 0.95


def test_plays_overlap_only_by_a_crossfade(composition: Composition) -> None:
    plays = composition.truth
    assert len(plays) >= 5
    assert any(p.speed > 1.0 for p in plays) and any(p.talk_over for p in plays)
    for p, q in zip(plays, plays[1:]):
        assert p.stream_start < q.stream_start
        overlap = p.stream_end - q.stream_start
        assert overlap <= SONG_CROSSFADE_S[1] + 1e-9
        if overlap > 0:
            assert overlap >= min(SONG_CROSSFADE_S[0], (p.stream_end - p.stream_start) / 3) - 1e-3
    for p in plays:
        assert 1.0 <= p.speed <= 1.03
        assert 0 <= p.ref_start < p.ref_end <= 30.0 + 1e-9
        assert p.ref_end - p.ref_start == pytest.approx((p.stream_end - p.stream_start) * p.speed, abs=1e-3)
    assert plays[-1].stream_end <= 4 * 60


def test_each_play_is_its_recording_once_the_speed_change_is_undone(composition: Composition) -> None:
    checked = 0
    for play in composition.truth:
        begin = play.stream_start + (12.5 if play.talk_over else 5.5)  # past the voice and the crossfade
        end = play.stream_end - 5.5
        if end - begin < 2.0:
            continue
        excerpt = composition.samples[round(begin * RATE) : round(end * RATE)]
        at_reference_speed = degrade.speed(excerpt, 1 / play.speed)
        ref_at = round((play.ref_start + (begin - play.stream_start) * play.speed) * RATE)
        reference = decode(play.recording, RATE)[ref_at : ref_at + at_reference_speed.shape[0]]
        n = min(reference.shape[0], at_reference_speed.shape[0]) - 400
        assert np.corrcoef(at_reference_speed[200 : 200 + n], reference[200 : 200 + n])[0, 1] > 0.95, play
        checked += 1
    assert checked >= 3


def test_speech_like_is_voiced_and_at_unit_level() -> None:
    voice = speech_like(3.0, np.random.default_rng(1), RATE)
    assert voice.shape == (3 * RATE,) and np.sqrt(np.mean(voice.astype(np.float64) ** 2)) == pytest.approx(1.0)
    assert (np.abs(voice) < 0.05).mean() > 0.1  # pauses between words


def test_nothing_to_play_is_a_clear_error() -> None:
    with pytest.raises(SimulationError, match="no catalogue recordings"):
        compose([], 1.0, seed=1)


def test_simulate_fast_publishes_every_stream_as_composed(
    kafka_broker: LocalBroker, recordings: list[Path], tmp_path: Path
) -> None:
    truth_out = io.StringIO()
    minutes = 0.5

    async def scenario() -> list[Chunk]:
        topic = await fresh_topic(kafka_broker.url, "simulate")
        sent = await simulate(recordings, 3, minutes, 5, kafka_broker.url, truth_out, topic=topic, fast=True, report=lambda m: None)
        assert sent == 3 * 15
        return await consume_chunks(kafka_broker.url, topic, lambda c: len(c) >= sent)

    chunks = asyncio.run(scenario())
    lines = [json.loads(line) for line in truth_out.getvalue().splitlines()]
    for stream, seed in zip(("sim-1", "sim-2", "sim-3"), stream_seeds(5, 3)):
        mine = [c for c in chunks if c.stream == stream]
        assert [c.sequence for c in mine] == list(range(15))
        assert all(b.captured_ns == a.end_ns for a, b in zip(mine, mine[1:]))
        composed = compose(recordings, minutes, seed)
        expected = np.clip(np.rint(composed.samples.astype(np.float64) * 32767), -32768, 32767).astype(np.int16)
        assert np.array_equal(np.concatenate([c.samples for c in mine]), expected)
        truth = [line for line in lines if line["stream"] == stream]
        assert [t["stream_start"] for t in truth] == [p.stream_start for p in composed.truth]
        for t in truth:
            assert t["captured_start_ns"] == mine[0].captured_ns + round(t["stream_start"] * 1e9)
            assert t["captured_start"].endswith("+00:00") and t["recording"] in map(str, recordings)


def test_simulate_command_writes_the_truth_file(
    kafka_broker: LocalBroker, recordings: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = asyncio.run(fresh_topic(kafka_broker.url, "simulate-cli"))
    monkeypatch.setenv("CASTWATCH_BROKER_URL", kafka_broker.url)
    out = tmp_path / "truth.jsonl"
    args = ["simulate", "--streams", "1", "--minutes", "0.25", "--catalogue-dir", str(recordings[0].parent),
            "--out", str(out), "--fast", "--topic", topic, "--prefix", "cli"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and {r["stream"] for r in records} == {"cli-1"}
    assert set(records[0]) == {
        "stream", "recording", "stream_start", "stream_end", "ref_start", "ref_end", "speed", "talk_over",
        "captured_start", "captured_end", "captured_start_ns", "captured_end_ns",
    }  # fmt: skip
    assert main(["simulate", "--streams", "1", "--minutes", "1", "--catalogue-dir", str(tmp_path / "none")]) == 1

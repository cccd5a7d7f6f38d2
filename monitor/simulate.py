"""Simulated broadcasts with a known answer: catalogue plays mixed the way radio mixes them, plus the truth.

The worker and its benchmarks need streams where every play is known to the
sample. :func:`compose` is a pure function (files in, audio and truth out;
same seed, same result) that strings together:

- plays of random catalogue recordings, whole or in part from a random
  reference start, many sped up 1-3 % (pitch and tempo together, as stations
  do), some with a presenter talking over the intro at 5 dB SNR;
- crossfades of 2-5 s between songs;
- jingles and presenter links (short synthesised beds, with or without a
  speech-like voice) and songs that are not in the catalogue, all from
  ``fingerprint.synth.music`` seeds far from any catalogue's, so they must
  never be reported;
- optionally a lossy codec (ffmpeg) on every item.

:func:`simulate` composes N streams, writes the truth as JSON lines and
publishes every stream's chunks concurrently through one producer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np
from scipy.signal import butter, sosfilt

from fingerprint.audio import decode
from fingerprint.bench import degrade
from fingerprint.synth import music
from monitor.ingest import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_RATE,
    TOPIC,
    ChunkPublisher,
    Pacer,
    Report,
    chunk_samples,
    plan_chunks,
    report_stderr,
    stoppable_sleep,
)
from monitor.settings import KafkaSecurity

SONG_CROSSFADE_S = (2.0, 5.0)
LINK_CROSSFADE_S = 0.5  # jingles and links butt against songs with a short blend
SPEEDUP = (1.01, 1.03)
SPEEDUP_PROBABILITY = 0.6
WHOLE_PLAY_PROBABILITY = 0.4
MIN_PARTIAL_S = 15.0  # reference seconds of a partial play, at least
TALK_OVER_PROBABILITY = 0.4
TALK_OVER_SNR_DB = 5.0
TALK_OVER_S = (5.0, 12.0)
JINGLE_S = (3.0, 8.0)
UNKNOWN_SONG_S = (30.0, 90.0)
# What follows a song: another song, a jingle or link, or a song not in the catalogue.
NEXT_ITEM = (("play", 0.6), ("jingle", 0.25), ("unknown", 0.15))
# Tests, the demo and benchmarks synthesise catalogues from small seeds; the bedding is far away.
NON_CATALOGUE_SEED_BASE = 1_000_000_000
ITEM_RMS = 0.1
PEAK = 0.95
DECODED_CACHE = 8  # recordings kept decoded while composing (a large catalogue would not fit)


class SimulationError(ValueError):
    """The simulation cannot run with what it was given (no catalogue, bad sizes)."""


@dataclass(frozen=True)
class TruthPlay:
    """One catalogue play in a composed broadcast. Times in seconds; ``speed`` = reference s per stream s."""

    recording: str
    stream_start: float  # from the broadcast's start, fade-in included
    stream_end: float
    ref_start: float  # recording time at stream_start
    ref_end: float
    speed: float
    talk_over: bool  # a voice over the first seconds


class Composition(NamedTuple):
    samples: np.ndarray  # float32 mono
    rate: int
    truth: list[TruthPlay]


def speech_like(seconds: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A voice-like signal: syllables of a gliding pitch with moving formants, words and pauses; unit RMS.

    Real talk-over masks music with harmonic, formant-shaped energy in the
    band the fingerprint uses, which noise alone does not imitate; tests must
    not download speech, so it is synthesised.
    """
    n = max(2, round(seconds * rate))
    out = np.zeros(n)
    f0 = rng.uniform(95, 220)
    pos = 0
    while pos < n:
        for _ in range(int(rng.integers(1, 5))):  # syllables of one word
            if pos >= n:
                break
            length = round(rng.uniform(0.12, 0.3) * rate)
            t = np.arange(length) / rate
            pitch = f0 * (1 + rng.uniform(-0.15, 0.15) * t / t[-1])  # intonation glides
            harmonics = np.arange(1, int(0.45 * rate / f0))
            formants = rng.uniform((250, 900, 2200), (900, 2300, 3300))
            gains = sum(np.exp(-0.5 * ((harmonics * f0 - f) / 120.0) ** 2) for f in formants) + 0.02
            phase = 2 * np.pi * np.cumsum(pitch) / rate
            voiced = (gains[:, None] * np.sin(harmonics[:, None] * phase)).sum(axis=0)
            syllable = voiced * np.sin(np.pi * np.arange(length) / length) ** 2
            end = min(n, pos + length)
            out[pos:end] += syllable[: end - pos]
            pos = end + round(rng.uniform(0.01, 0.06) * rate)
        pos += round(rng.uniform(0.1, 0.5) * rate)  # between words
    band = butter(2, (100.0, min(3800.0, 0.45 * rate)), btype="bandpass", fs=rate, output="sos")
    out = sosfilt(band, out)
    rms = np.sqrt(np.mean(out**2))
    return (out / rms if rms > 0 else out).astype(np.float32)


def _level(x: np.ndarray) -> np.ndarray:
    """Items at one loudness, as a station's processing puts them."""
    rms = np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))
    return (x * (ITEM_RMS / rms)).astype(np.float32) if rms > 0 else x.astype(np.float32)


def _fade(n: int) -> np.ndarray:
    """Equal-power fade-in of n samples (its reverse fades out), so a crossfade keeps the loudness."""
    return np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n).astype(np.float32) if n else np.zeros(0, np.float32)


@dataclass
class _Item:
    audio: np.ndarray
    song: bool  # crossfades between songs are long, around links short
    play: TruthPlay | None = None  # relative times; placed once the start is known
    start: int = 0


class _Composer:
    """The random choices of one composition, all drawn from one generator (a seed reproduces them)."""

    def __init__(self, files: Sequence[Path], rate: int, rng: np.random.Generator, codec_kbps: int | None) -> None:
        self.files, self.rate, self.rng, self.codec_kbps = files, rate, rng, codec_kbps
        self.load = functools.lru_cache(maxsize=DECODED_CACHE)(lambda path: decode(path, rate))

    def _seconds(self, bounds: tuple[float, float]) -> float:
        return float(self.rng.uniform(*bounds))

    def _finish(self, audio: np.ndarray) -> np.ndarray:
        audio = _level(audio)
        return degrade.codec(audio, self.rate, self.codec_kbps).astype(np.float32) if self.codec_kbps else audio

    def play(self) -> _Item:
        path = self.files[int(self.rng.integers(len(self.files)))]
        reference = self.load(path)
        length = reference.shape[0]
        min_partial = round(MIN_PARTIAL_S * self.rate)
        if self.rng.random() < WHOLE_PLAY_PROBABILITY or length < 2 * min_partial:
            a, b = 0, length
        else:
            a = int(self.rng.integers(0, length - min_partial))
            b = int(self.rng.integers(a + min_partial, length + 1))
        factor = 1.0
        if self.rng.random() < SPEEDUP_PROBABILITY:
            factor = float(Fraction(self._seconds(SPEEDUP)).limit_denominator(1000))  # what degrade.speed applies
        audio = degrade.speed(reference[a:b], factor) if factor != 1.0 else reference[a:b].copy()
        audio = _level(audio)
        talk = self.rng.random() < TALK_OVER_PROBABILITY
        if talk:
            self._talk_over(audio)
        play = TruthPlay(str(path), 0.0, audio.shape[0] / self.rate, a / self.rate, b / self.rate, factor, talk)
        return _Item(self._finish(audio), True, play)

    def jingle(self) -> _Item:
        seconds = self._seconds(JINGLE_S)
        bed = music(seconds, NON_CATALOGUE_SEED_BASE + int(self.rng.integers(1 << 30)), self.rate)
        if self.rng.random() < 0.5:  # a presenter link over the bed
            bed = _level(bed) * 0.5 + speech_like(seconds, self.rng, self.rate)[: bed.shape[0]] * ITEM_RMS
        return _Item(self._finish(bed), False)

    def unknown_song(self, talk_over: bool = False) -> _Item:
        seconds = self._seconds(UNKNOWN_SONG_S)
        audio = music(seconds, NON_CATALOGUE_SEED_BASE + int(self.rng.integers(1 << 30)), self.rate)
        if talk_over and self.rng.random() < TALK_OVER_PROBABILITY:
            audio = _level(audio)
            self._talk_over(audio)
        return _Item(self._finish(audio), True)

    def _talk_over(self, audio: np.ndarray) -> None:
        """A presenter over the first 5-12 s (at most half) of ``audio``, levelled, in place."""
        intro = min(audio.shape[0] // 2, round(self._seconds(TALK_OVER_S) * self.rate))
        voice = speech_like(intro / self.rate, self.rng, self.rate)
        audio[:intro] = degrade.talk_over(audio[:intro], voice, self.rate, TALK_OVER_SNR_DB)

    def nothing_known(self, first: bool) -> _Item:
        """A song not in the catalogue (talked over as often as a play) or a jingle or link."""
        return self.jingle() if not first and self.rng.random() < 0.3 else self.unknown_song(talk_over=True)

    def next_item(self, first: bool) -> _Item:
        kinds, weights = zip(*NEXT_ITEM)
        kind = "play" if first else kinds[int(self.rng.choice(len(kinds), p=weights))]
        return {"play": self.play, "jingle": self.jingle, "unknown": self.unknown_song}[kind]()

    def overlap(self, previous: _Item, item: _Item) -> int:
        seconds = self._seconds(SONG_CROSSFADE_S) if previous.song and item.song else LINK_CROSSFADE_S
        return min(round(seconds * self.rate), previous.audio.shape[0] // 3, item.audio.shape[0] // 3)


def compose(
    catalogue_files: Sequence[str | Path], minutes: float, seed: int, rate: int = DEFAULT_RATE,
    codec_kbps: int | None = None,
) -> Composition:  # fmt: skip
    """``minutes`` of broadcast from ``catalogue_files``, and the catalogue plays in it, at ``rate``.

    Items follow each other with crossfades; two plays overlap only by their
    crossfade. The last item is cut at the end and its truth says so.
    ``codec_kbps`` runs every item through MP3 at that bitrate (ffmpeg, else libsndfile).
    """
    if not catalogue_files:
        raise SimulationError("no catalogue recordings to play: give a directory of WAV, FLAC or OGG files")
    if minutes <= 0:
        raise SimulationError(f"--minutes {minutes}: expected a positive number")
    total = round(minutes * 60 * rate)
    composer = _Composer([Path(f) for f in catalogue_files], rate, np.random.default_rng(seed), codec_kbps)
    return _assemble(composer, composer.next_item, total)


def compose_unknown(minutes: float, seed: int, rate: int = DEFAULT_RATE) -> np.ndarray:
    """``minutes`` of broadcast with nothing from any catalogue: what a monitor must never report.

    Songs and jingles from ``fingerprint.synth.music`` seeds far from any
    catalogue's, 40 % of the songs talked over at the start as plays are,
    crossfaded as :func:`compose` does (float32 mono at ``rate``).
    """
    if minutes <= 0:
        raise SimulationError(f"--minutes {minutes}: expected a positive number")
    composer = _Composer([], rate, np.random.default_rng(seed), None)
    return _assemble(composer, composer.nothing_known, round(minutes * 60 * rate)).samples


def _assemble(composer: _Composer, next_item: Callable[[bool], _Item], total: int) -> Composition:
    """Items from ``next_item`` crossfaded one after another up to ``total`` samples, and the plays among them."""
    rate = composer.rate
    items: list[_Item] = []
    cursor = 0
    while cursor < total:
        item = next_item(not items)
        if items:
            n = composer.overlap(items[-1], item)
            fade = _fade(n)
            items[-1].audio[items[-1].audio.shape[0] - n :] *= fade[::-1]
            item.audio[:n] *= fade
            cursor -= n
        item.start = cursor
        cursor += item.audio.shape[0]
        items.append(item)
    out = np.zeros(cursor, np.float64)
    truth: list[TruthPlay] = []
    for item in items:
        out[item.start : item.start + item.audio.shape[0]] += item.audio
        if item.play is not None:
            truth.append(_placed(item.play, item.start, total, rate))
    out = out[:total]
    peak = np.max(np.abs(out), initial=0.0)
    if peak > PEAK:
        out *= PEAK / peak
    return Composition(out.astype(np.float32), rate, truth)


def _placed(play: TruthPlay, start: int, total: int, rate: int) -> TruthPlay:
    """``play`` at sample ``start`` of the broadcast, cut at ``total`` samples."""
    end = start / rate + play.stream_end
    ref_end = play.ref_end
    if end > total / rate:
        end = total / rate
        ref_end = play.ref_start + (end - start / rate) * play.speed
    return TruthPlay(play.recording, start / rate, end, play.ref_start, ref_end, play.speed, play.talk_over)


def truth_record(stream: str, play: TruthPlay, start_ns: int) -> dict[str, object]:
    """A truth line: the play with its stream and absolute capture times (ns, and ISO 8601 UTC)."""
    record: dict[str, object] = {"stream": stream, **asdict(play)}
    for edge in ("start", "end"):
        ns = start_ns + round(getattr(play, f"stream_{edge}") * 1e9)
        record[f"captured_{edge}_ns"] = ns
        record[f"captured_{edge}"] = datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")
    return record


def stream_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i + 1}" for i in range(count)]


def stream_seeds(seed: int, count: int) -> list[int]:
    """Independent composition seeds per stream, reproducible from one seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


async def publish_streams(
    streams: dict[str, np.ndarray], rate: int, publisher: ChunkPublisher, *, chunk_seconds: float, start_ns: int,
    fast: bool, stop: asyncio.Event,
) -> None:  # fmt: skip
    """Every stream's chunks, concurrently, paced from one origin so the streams stay in step."""
    size = chunk_samples(rate, chunk_seconds)
    pacer = Pacer(fast, stoppable_sleep(stop))

    async def one(stream: str, samples: np.ndarray) -> None:
        for chunk in plan_chunks(samples, rate, size, start_ns):
            if stop.is_set():
                return
            await pacer.wait(chunk)
            await publisher.send(stream, chunk, rate)

    await asyncio.gather(*(one(stream, samples) for stream, samples in streams.items()))


async def simulate(
    catalogue_files: Sequence[str | Path], streams: int, minutes: float, seed: int, broker_url: str, truth_out: TextIO,
    *, topic: str = TOPIC, prefix: str = "sim", rate: int = DEFAULT_RATE, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    codec_kbps: int | None = None, fast: bool = False, stop: asyncio.Event | None = None,
    report: Report = report_stderr, security: KafkaSecurity = KafkaSecurity(),
) -> int:  # fmt: skip
    """Compose ``streams`` broadcasts, write their truth, publish them; the number of chunks sent."""
    if streams < 1:
        raise SimulationError(f"--streams {streams}: expected at least 1")
    chunk_samples(rate, chunk_seconds)  # refuse bad sizes before minutes of composing
    stop = stop or asyncio.Event()
    ids = stream_ids(prefix, streams)
    audio: dict[str, np.ndarray] = {}
    truth: dict[str, list[TruthPlay]] = {}
    for i, (stream, stream_seed) in enumerate(zip(ids, stream_seeds(seed, streams))):
        report(f"composing {stream} ({i + 1}/{streams}, {minutes:g} min)")
        composition = await asyncio.to_thread(compose, catalogue_files, minutes, stream_seed, rate, codec_kbps)
        audio[stream], truth[stream] = composition.samples, composition.truth
    async with ChunkPublisher(broker_url, topic, security) as publisher:
        start_ns = time.time_ns()
        for stream in ids:
            for play in truth[stream]:
                truth_out.write(json.dumps(truth_record(stream, play, start_ns)) + "\n")
        truth_out.flush()
        pace = "as fast as the broker takes them" if fast else "in real time"
        report(f"publishing {streams} stream(s) to {topic} {pace}")
        started = time.monotonic()
        await publish_streams(audio, rate, publisher, chunk_seconds=chunk_seconds, start_ns=start_ns, fast=fast, stop=stop)
    seconds = publisher.samples_sent / rate
    report(f"sent {publisher.sent} chunks, {seconds:.0f} s of audio in {time.monotonic() - started:.1f} s"
           f"{' (stopped early)' if stop.is_set() else ''}")  # fmt: skip
    return publisher.sent


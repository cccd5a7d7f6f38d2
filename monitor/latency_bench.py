"""``python -m monitor.latency_bench``: detection latency of the stream processing alone, offline, by chunk length.

The daemon benchmark (``python -m monitor.bench``) measures latency under
load, through the broker, at one chunk length. This one takes the broker
and the load away to show what the latency is made of: the same catalogue
and benchmark database (built on first use, about 100 h), the index loaded
as a worker loads it, and the daemon benchmark's simulated broadcasts
(same seeds) fed chunk by chunk through ``monitor.stream.StreamProcessor``
at each ``--chunk-seconds`` and at ``--phases`` chunk phases (the first
chunk of phase k is k/phases of a chunk shorter, so plays begin at
different points of their chunks).

For each chunk length: ground-truth plays found, missed, false and split
(scored as the daemon benchmark scores them); detection latency, stream
time from a play's true start (fade-in included) to the end of the chunk
whose processing announced it, p50/p95, overall and split by talk-over;
the same from the play's reported start (what the worker's
``castwatch_detection_latency_seconds`` observes); how far the reported
starts are from the true ones; the CPU time of
``StreamProcessor.feed`` per second of stream; and, with
``--unknown-hours``, the plays announced on that many hours of broadcast
holding nothing from the catalogue (``monitor.simulate.compose_unknown``:
songs and jingles not in it, talked over as plays are), every one of them a
false accusation. ``--min-aligned`` sets the matcher's evidence threshold
(aligned anchors per window) to weigh latency against false plays.

``--evidence`` adds what the fingerprint itself allows, whatever the
decision rule: for each scored play, the stream time from its true start
until a window of ``WINDOW_S`` holds k anchors aligned on the play's true
timeline (known from the ground truth; the broadcast's final live
landmarks looked up in the index; a triplet counts from the moment its last
peak is heard), counted on rare keys (what the vote
sees) and on all keys (what the confirmation on common keys sees), the
first window where the matcher's two rules could hold (k rare, or
``CONFIRM_MIN_RARE`` rare and ``CONFIRM_MIN_ALIGNED`` in all), and the
aligned anchors per second over a play's first seconds. No voting can
announce a play before it has its evidence, so the rules' column bounds
the latency from below.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psycopg
from tqdm import tqdm

from fingerprint.hashes import probe_keys
from fingerprint.landmarks import LIVE, Landmarks, extract
from fingerprint.matcher import CONFIRM_MIN_ALIGNED, CONFIRM_MIN_RARE, MIN_ALIGNED, Hits, Matcher
from fingerprint.params import FRAME_RATE, PEAK_DT, SAMPLE_RATE
from fingerprint.resample import StreamingResampler
from monitor.bench import (
    FILE_RATE,
    Detection,
    Stream,
    bench_database,
    catalogue_arguments,
    catalogue_files,
    publish,
    score_detections,
)
from monitor.chunks import Chunk
from monitor.rights.bench import _machine
from monitor.rights.snapshot import load_snapshot
from monitor.settings import Settings
from monitor.simulate import TruthPlay, compose, compose_unknown
from monitor.stream import WINDOW_S, StreamProcessor
from monitor.tracker import STARTED

ORIGIN_NS = 1_780_000_000 * 10**9
SCORE_MARGIN_S = 30.0  # plays starting this close to a broadcast's end are not scored (as in monitor.bench)
UNKNOWN_STREAM_MINUTES = 30.0  # the non-catalogue hours are cut into streams this long
EVIDENCE_THRESHOLDS = (6, 8, 10, 14)  # aligned anchors per window on rare keys, for --evidence
ALL_KEY_THRESHOLDS = (10, 14, 20, 30)  # ... and on all keys
EVIDENCE_SECONDS = 12  # the first seconds of a play whose aligned anchors --evidence counts
ALIGNED_FRAMES = 2.0  # a hit within this many frames of the true timeline is aligned
EVIDENCE_HORIZON_S = 60.0  # --evidence looks this far into each play


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def run_stream(matcher: Matcher, stream: Stream, chunk_s: float, phase: float) -> tuple[list[dict[str, object]], float]:
    """Feed one broadcast through a StreamProcessor: its play events as the daemon writes them, and CPU seconds."""
    size = round(chunk_s * FILE_RATE)
    bounds = [0, *range(round(phase * size) or size, stream.audio.shape[0], size), stream.audio.shape[0]]
    processor = StreamProcessor(stream.name, lambda: matcher)
    events: list[dict[str, object]] = []
    cpu = 0.0
    for seq, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        chunk = Chunk(stream.name, seq, stream.origin_ns + round(a * 1e9 / FILE_RATE), FILE_RATE, stream.audio[a:b])
        began = time.process_time()
        fed = processor.feed(chunk)
        cpu += time.process_time() - began
        for event in fed.events:
            events.append({
                "event": event.kind, "event_id": event.event_id, "stream_id": stream.name,
                "track_id": int(event.play.track), "started_at": _iso(event.play.start), "detected_at": _iso(processor.end_s),
            })  # fmt: skip
    return events, cpu


@dataclass(frozen=True)
class Onset:
    """What the fingerprint holds of one play's first seconds (see ``--evidence``); seconds from the true start, inf: never."""

    talk_over: bool
    reached: tuple[float, ...]  # until each EVIDENCE_THRESHOLDS is reached on rare keys
    reached_all: tuple[float, ...]  # until each ALL_KEY_THRESHOLDS is reached on all keys
    decidable: float  # until a window satisfies one of the matcher's rules at its threshold
    per_second: np.ndarray  # aligned anchors on rare keys in each of the first EVIDENCE_SECONDS seconds
    per_second_all: np.ndarray  # ... on all keys


def evidence_onsets(matcher: Matcher, stream: Stream, ids: dict[str, int], until_s: float) -> list[Onset]:
    """Evidence on each scored play's true timeline, from the broadcast's final live landmarks."""
    resampler = StreamingResampler(FILE_RATE, SAMPLE_RATE)
    audio = stream.audio.astype(np.float32) / 32768.0
    landmarks = extract(np.concatenate([resampler.feed(audio), resampler.flush()]), LIVE)
    hits = matcher.lookup(landmarks)
    probes = probe_keys(landmarks)
    out = []
    for play in stream.truth:
        if play.stream_start > until_s - SCORE_MARGIN_S:
            continue
        track = str(ids[str(play.recording)])
        rare = matcher.hits_of(hits, track)
        every = Hits.concat([rare, matcher.lookup_within(landmarks, track, probes)])
        aligned = [_aligned(matcher, hits_on, landmarks, play, track) for hits_on in (rare, every)]
        out.append(_onset(*aligned, play, matcher.min_aligned))
    return out


class _Aligned(NamedTuple):
    """A play's anchors on its true timeline: anchor time, and when the triplet's last peak was heard (s from the true start)."""

    anchor: np.ndarray
    heard: np.ndarray


def _aligned(matcher: Matcher, own: Hits, landmarks: Landmarks, play: TruthPlay, track: str) -> _Aligned:
    first = int(matcher.index.starts[matcher.index.track_number(track)])
    expected = play.ref_start * FRAME_RATE + play.speed * (own.t - play.stream_start * FRAME_RATE)
    on = np.abs(own.frame.astype(np.float64) - first - expected) <= ALIGNED_FRAMES
    anchors, which = np.unique(own.t[on], return_inverse=True)
    heard = np.full(anchors.shape[0], np.inf)
    np.minimum.at(heard, which, own.t[on] + landmarks.dt3[own.serial[on]] + PEAK_DT)
    keep = (anchors >= play.stream_start * FRAME_RATE) & (anchors < (play.stream_start + EVIDENCE_HORIZON_S) * FRAME_RATE)
    return _Aligned(anchors[keep] / FRAME_RATE - play.stream_start, heard[keep] / FRAME_RATE - play.stream_start)


def _most_in_window(anchor: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Anchors (sorted) in the window of WINDOW_S ending at each of ``ends``."""
    return np.searchsorted(anchor, ends, side="right") - np.searchsorted(anchor, ends - WINDOW_S, side="right")


def _first_heard(rare: _Aligned, every: _Aligned, rules: list[Callable[[np.ndarray, np.ndarray], bool]]) -> list[float]:
    """For each rule, the first moment the anchors heard so far satisfy ``rule(rare counts, all counts)`` (inf: never).

    Counts are per window of WINDOW_S ending at each anchor heard so far; a
    triplet counts once its last peak is heard, so this is causal: no
    stream processing could hold the evidence earlier.
    """
    first = [float("inf")] * len(rules)
    for moment in np.unique(every.heard):
        waiting = [n for n, at in enumerate(first) if at == float("inf")]
        if not waiting:
            break
        rare_anchors = np.sort(rare.anchor[rare.heard <= moment])
        all_anchors = np.sort(every.anchor[every.heard <= moment])
        r, a = _most_in_window(rare_anchors, all_anchors), _most_in_window(all_anchors, all_anchors)
        for n in waiting:
            if rules[n](r, a):
                first[n] = float(moment)
    return first


def _onset(rare: _Aligned, every: _Aligned, play: TruthPlay, min_aligned: int) -> Onset:
    def on_rare(k: int) -> Callable[[np.ndarray, np.ndarray], bool]:
        return lambda r, a: bool(np.any(r >= k))

    def on_all(k: int) -> Callable[[np.ndarray, np.ndarray], bool]:
        return lambda r, a: bool(np.any(a >= k))

    def matcher_rules(r: np.ndarray, a: np.ndarray) -> bool:
        return bool(np.any((r >= min_aligned) | ((r >= CONFIRM_MIN_RARE) & (a >= CONFIRM_MIN_ALIGNED))))

    rules = [*map(on_rare, EVIDENCE_THRESHOLDS), *map(on_all, ALL_KEY_THRESHOLDS), matcher_rules]
    first = _first_heard(rare, every, rules)
    n = len(EVIDENCE_THRESHOLDS)
    return Onset(
        play.talk_over,
        tuple(first[:n]),
        tuple(first[n:-1]),
        first[-1],
        np.histogram(rare.anchor, bins=np.arange(EVIDENCE_SECONDS + 1))[0],
        np.histogram(every.anchor, bins=np.arange(EVIDENCE_SECONDS + 1))[0],
    )


def evidence_report(onsets: list[Onset], min_aligned: int = MIN_ALIGNED) -> str:
    lines = [
        f"What the fingerprint holds (`--evidence`, {len(onsets)} plays, each once): stream time from the true start"
        f" until a {WINDOW_S:g} s window holds k anchors aligned on the play's true timeline, p50 / p95 (inf: never).",
        "",
        "| keys | k | all | no talk-over | with talk-over |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(keys: str, k: str, values: list[tuple[bool, float]]) -> str:
        groups = [[x for talk_over, x in values if talk is None or talk_over == talk] for talk in (None, False, True)]
        return f"| {keys} | {k} | " + " | ".join(_percentiles(g) for g in groups) + " |"

    for n, k in enumerate(EVIDENCE_THRESHOLDS):
        lines.append(row("rare", str(k), [(o.talk_over, o.reached[n]) for o in onsets]))
    for n, k in enumerate(ALL_KEY_THRESHOLDS):
        lines.append(row("all", str(k), [(o.talk_over, o.reached_all[n]) for o in onsets]))
    rules = f"{min_aligned} rare, or {CONFIRM_MIN_RARE} rare and {CONFIRM_MIN_ALIGNED} in all"
    lines.append(row("the matcher's rules", rules, [(o.talk_over, o.decidable) for o in onsets]))
    lines += ["", f"Aligned anchors per second over the first {EVIDENCE_SECONDS} s (mean), rare keys / all keys:", ""]
    for label, talk in (("no talk-over", False), ("with talk-over", True)):
        mine = [o for o in onsets if o.talk_over == talk]
        if mine:
            rare = np.mean([o.per_second for o in mine], axis=0)
            every = np.mean([o.per_second_all for o in mine], axis=0)
            lines.append(f"- {label}: " + " ".join(f"{x:.1f}/{y:.1f}" for x, y in zip(rare, every)))
    return "\n".join(lines + [""])


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.median(values):.1f} / {np.percentile(values, 95):.1f}"


def report(args: argparse.Namespace, rows: list[tuple[float, Detection, float, int]], hours: float, tracks: int, plays: int) -> str:
    lines = [
        f"## {date.today().isoformat()} (offline)",
        "",
        f"Machine: {_machine()}",
        "",
        f"Command: `python -m monitor.latency_bench --tracks {args.tracks} --broadcasts {args.broadcasts}"
        f" --minutes {args.minutes:g} --phases {args.phases} --chunk-seconds {args.chunk_seconds}"
        f" --unknown-hours {args.unknown_hours:g} --min-aligned {args.min_aligned}{' --evidence' if args.evidence else ''}`",
        "",
        f"Catalogue: {tracks} recordings, {hours:.1f} h. {args.broadcasts} broadcasts of {args.minutes:g} min at"
        f" {args.phases} chunk phase(s): {plays} scored plays per chunk length. Latency in seconds of stream time,"
        f" p50 / p95. Evidence threshold: {args.min_aligned} aligned anchors per window.",
        "",
        "| chunk (s) | found / missed / false / split | from true start | no talk-over | with talk-over"
        f" | from reported start | start error | CPU per stream-second (ms) | plays on {args.unknown_hours:g} h not in the catalogue |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for chunk_s, d, cpu_per_s, false_unknown in rows:
        quiet = [x for x, talk in zip(d.latencies, d.talk_over) if not talk]
        talked = [x for x, talk in zip(d.latencies, d.talk_over) if talk]
        lines.append(
            f"| {chunk_s:g} | {d.found} / {d.missed} / {d.false} / {d.split} | {_percentiles(d.latencies)}"
            f" | {_percentiles(quiet)} ({len(quiet)}) | {_percentiles(talked)} ({len(talked)})"
            f" | {_percentiles(d.reported)} | {d.start_accuracy()} | {cpu_per_s * 1e3:.2f} | {false_unknown if args.unknown_hours else '-'} |"
        )
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.latency_bench", description=__doc__.splitlines()[0])
    catalogue_arguments(parser)
    parser.add_argument("--broadcasts", type=int, default=12, help="simulated broadcasts (default 12)")
    parser.add_argument("--minutes", type=float, default=6.0, help="minutes per broadcast (default 6)")
    parser.add_argument("--phases", type=int, default=2, help="chunk phases per broadcast (default 2)")
    parser.add_argument("--chunk-seconds", default="5,2,1", help="chunk lengths to compare (default 5,2,1)")
    parser.add_argument("--unknown-hours", type=float, default=0.0, help="hours of non-catalogue broadcast to count false plays on (default 0)")
    parser.add_argument("--min-aligned", type=int, default=MIN_ALIGNED, help=f"aligned anchors a window needs (default {MIN_ALIGNED})")
    parser.add_argument("--evidence", action="store_true", help="also report the evidence the fingerprint holds at play starts")
    args = parser.parse_args(argv)
    lengths = [float(x) for x in args.chunk_seconds.split(",")]
    if args.broadcasts < 1 or args.phases < 1 or args.minutes * 60 <= SCORE_MARGIN_S or min(lengths) <= 0:
        parser.error("--broadcasts and --phases must be at least 1, --minutes above 0.5, chunk lengths positive")
    if args.unknown_hours < 0 or args.min_aligned < 1:
        parser.error("--unknown-hours must not be negative, --min-aligned at least 1")

    files = catalogue_files(Path(args.cache), args.tracks, args.jobs)
    server, url, ids, hours = bench_database(Settings.from_env(), files, args.jobs)
    try:
        print("loading the index", file=sys.stderr)
        with psycopg.connect(url) as conn:
            matcher = Matcher(load_snapshot(conn).index, min_aligned=args.min_aligned)
    finally:
        server.stop()
    streams = []
    for seed in tqdm(range(args.broadcasts), unit="broadcast", desc="composing", file=sys.stderr):
        composition = compose(files, args.minutes, 1000 + seed, FILE_RATE)
        pcm = np.clip(np.round(composition.samples * 32767.0), -32768, 32767).astype(np.int16)
        streams.append(Stream(f"bench-{seed + 1}", pcm, composition.truth, ORIGIN_NS, 0.0, level=0))
    unknown = []
    pieces = int(np.ceil(args.unknown_hours * 60 / UNKNOWN_STREAM_MINUTES))
    for k in tqdm(range(pieces), unit="stream", desc="composing non-catalogue", file=sys.stderr):
        minutes = min(UNKNOWN_STREAM_MINUTES, args.unknown_hours * 60 - k * UNKNOWN_STREAM_MINUTES)
        pcm = np.clip(np.round(compose_unknown(minutes, 2000 + k, FILE_RATE) * 32767.0), -32768, 32767).astype(np.int16)
        unknown.append(Stream(f"unknown-{k + 1}", pcm, [], ORIGIN_NS, 0.0, level=0))
    until_ns = ORIGIN_NS + round(args.minutes * 60e9)
    rows = []
    for chunk_s in lengths:
        runs = [(replace(s, name=f"{s.name}.{k}"), k / args.phases) for s in streams for k in range(args.phases)]
        events: list[dict[str, object]] = []
        cpu = 0.0
        for stream, phase in tqdm(runs, unit="run", desc=f"{chunk_s:g} s chunks", file=sys.stderr):
            found, seconds = run_stream(matcher, stream, chunk_s, phase)
            events += found
            cpu += seconds
        (detection,) = score_detections([s for s, _ in runs], events, ids, until_ns).values()
        false_unknown = 0
        for stream in tqdm(unknown, unit="stream", desc=f"{chunk_s:g} s chunks, non-catalogue", file=sys.stderr):
            found, _ = run_stream(matcher, stream, chunk_s, 0.0)
            announced = [e for e in found if e["event"] == STARTED]
            for event in announced:
                tqdm.write(f"false play: {stream.name} track {event['track_id']} from {event['started_at']}", file=sys.stderr)
            false_unknown += len(announced)
        rows.append((chunk_s, detection, cpu / (len(runs) * args.minutes * 60), false_unknown))
    plays = rows[0][1].found + rows[0][1].missed
    text = report(args, rows, hours, len(ids), plays)
    if args.evidence:
        onsets = [o for s in tqdm(streams, unit="broadcast", desc="evidence", file=sys.stderr) for o in evidence_onsets(matcher, s, ids, args.minutes * 60)]
        text += "\n" + evidence_report(onsets, args.min_aligned)
    publish(text, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

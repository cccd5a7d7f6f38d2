"""Offline command line of the engine: ``python -m fingerprint index|match``.

The output of ``match --json`` is a stable contract (DESIGN.md): one JSON
object per query and line, flushed as soon as the query is done.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tqdm import tqdm

from fingerprint import index as index_mod
from fingerprint.audio import AudioError, audio_files, decode
from fingerprint.landmarks import QUERY, REFERENCE, Density, Landmarks, extract
from fingerprint.matcher import MIN_ALIGNED, MIN_SCORE, Matcher
from fingerprint.params import SAMPLE_RATE
from fingerprint.spectrum import n_frames_for

T = TypeVar("T")
R = TypeVar("R")

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Extracted:
    """Result of fingerprinting one file in a worker process."""

    source: str
    landmarks: Landmarks | None
    n_frames: int
    error: str | None
    seconds: float  # audio duration


def fingerprint_file(source: str, density: Density = REFERENCE) -> Extracted:
    """Decode and extract one file; errors are returned, not raised, so a batch goes on."""
    try:
        samples = decode(source)
    except AudioError as e:
        return Extracted(source, None, 0, str(e), 0.0)
    n_frames = n_frames_for(samples.shape[0])
    if n_frames == 0:
        return Extracted(source, None, 0, f"{source}: too short to fingerprint ({samples.shape[0]} samples)", 0.0)
    return Extracted(source, extract(samples, density), n_frames, None, samples.shape[0] / SAMPLE_RATE)


def in_processes(work: Callable[[T], R], items: list[T], jobs: int) -> Iterator[R]:
    """``work`` over ``items`` in ``jobs`` spawned processes (in-process for 1), results in input order."""
    if jobs <= 1 or len(items) <= 1:
        yield from map(work, items)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(work, items, chunksize=1)


def fingerprint_many(sources: list[str], jobs: int) -> Iterator[Extracted]:
    """Results in input order, extracted by ``jobs`` processes (in-process for 1)."""
    return in_processes(fingerprint_file, sources, jobs)


def _progress(total: int, quiet: bool, unit: str) -> tqdm:
    return tqdm(total=total, unit=unit, disable=quiet or None, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _cmd_index(args: argparse.Namespace) -> int:
    path = args.index_path
    base = index_mod.load(path, mmap=False) if os.path.exists(path) else None
    sources = audio_files(args.sources)
    if not sources:
        print("error: no audio files found in the given paths", file=sys.stderr)
        return EXIT_SOME_FAILED
    builder = index_mod.IndexBuilder(base)
    todo = []
    for s in sources:
        if s in builder:
            print(f"{s}: already in the index, skipped", file=sys.stderr)
        elif s not in todo:
            todo.append(s)
    failures = 0
    audio_seconds = 0.0
    started = time.perf_counter()
    with _progress(len(todo), args.quiet, "file") as bar:
        for result in fingerprint_many(todo, args.jobs):
            bar.update(1)
            if result.error is not None:
                failures += 1
                bar.write(f"error: {result.error}", file=sys.stderr)
                continue
            assert result.landmarks is not None
            builder.add(result.source, result.landmarks, result.n_frames)
            audio_seconds += result.seconds
            bar.set_postfix_str(f"{audio_seconds / max(time.perf_counter() - started, 1e-9):.0f}x realtime")
    index = builder.freeze()
    index_mod.save(index, path)
    if not args.quiet:
        print(
            f"{path}: {index.n_tracks} tracks, {index.seconds / 3600:.2f} h, {index.n_postings} postings,"
            f" {index.nbytes / 1e6:.1f} MB ({len(todo) - failures} added, {failures} failed)",
            file=sys.stderr,
        )
    return EXIT_SOME_FAILED if failures else EXIT_OK


_MATCHER: Matcher | None = None


def _init_match_worker(index_path: str, min_aligned: int, min_score: float) -> None:
    global _MATCHER
    _MATCHER = Matcher(index_mod.load(index_path), min_aligned=min_aligned, min_score=min_score)


def _match_one(source: str) -> dict[str, object]:
    assert _MATCHER is not None
    result = fingerprint_file(source, QUERY)
    if result.error is not None:
        return {"query": source, "error": result.error}
    assert result.landmarks is not None
    return {"query": source, "matches": [m.as_json() for m in _MATCHER.match(result.landmarks)]}


def _match_results(args: argparse.Namespace, sources: list[str]) -> Iterator[dict[str, object]]:
    init = (args.index_path, args.min_aligned, args.min_score)
    if args.jobs <= 1 or len(sources) <= 1:
        _init_match_worker(*init)
        yield from map(_match_one, sources)
        return
    with multiprocessing.get_context("spawn").Pool(args.jobs, _init_match_worker, init) as pool:
        yield from pool.imap(_match_one, sources, chunksize=1)


def _describe(result: dict[str, object]) -> str:
    if "error" in result:
        return f"{result['query']}: error: {result['error']}"
    matches = result["matches"]
    assert isinstance(matches, list)
    if not matches:
        return f"{result['query']}: no match"
    lines = [f"{result['query']}:"]
    for m in matches:
        lines.append(
            f"  {m['track']}  score {m['score']:.2f} ({m['count']} landmarks)"
            f"  query {m['query_start']:.1f}-{m['query_end']:.1f} s"
            f" = reference {m['ref_start']:.1f}-{m['ref_end']:.1f} s  speed x{m['speed']:.3f}"
        )
    return "\n".join(lines)


def _cmd_match(args: argparse.Namespace) -> int:
    index_mod.load(args.index_path)  # fail fast with a clear message before spawning workers
    failures = 0
    for result in _match_results(args, args.queries):
        if "error" in result:
            failures += 1
            print(f"error: {result['error']}", file=sys.stderr)
        print(json.dumps(result) if args.json else _describe(result), flush=True)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def jobs_arg(value: str) -> int:
    """argparse type for a number of processes (at least 1)."""
    try:
        n = int(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {value!r}") from e
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fingerprint", description="Landmark audio fingerprinting: build an index, identify queries."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default_jobs = max(1, os.cpu_count() or 1)

    p_index = sub.add_parser("index", help="create or extend an index with audio files or directories")
    p_index.add_argument("index_path", metavar="INDEX_PATH", help="index directory (created if missing)")
    p_index.add_argument("sources", metavar="FILE_OR_DIR", nargs="+", help="audio files, or directories to scan")
    p_index.add_argument("--jobs", "-j", type=jobs_arg, default=default_jobs, help=f"extraction processes (default {default_jobs})")
    p_index.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p_index.set_defaults(run=_cmd_index)

    p_match = sub.add_parser("match", help="identify query files against an index")
    p_match.add_argument("index_path", metavar="INDEX_PATH")
    p_match.add_argument("queries", metavar="QUERY", nargs="+", help="audio files or URLs")
    p_match.add_argument("--json", action="store_true", help="one JSON object per query and line")
    p_match.add_argument("--jobs", "-j", type=jobs_arg, default=1, help="matching processes (default 1)")
    p_match.add_argument("--min-aligned", type=int, default=MIN_ALIGNED, help=f"landmarks a match needs (default {MIN_ALIGNED})")
    p_match.add_argument("--min-score", type=float, default=MIN_SCORE, help=f"aligned fraction a match needs (default {MIN_SCORE})")
    p_match.set_defaults(run=_cmd_match)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except index_mod.IndexFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK

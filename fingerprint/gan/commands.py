"""What `castwatch gan train|sample`, `castwatch attack` and `castwatch robustness` do.

monitor/cli.py owns the parsers; these functions take the parsed arguments,
turn user mistakes into ``GanError`` with a message that says what to do,
and print what they wrote.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from fingerprint.gan.generator import GanError, Generator, load, shipped
from fingerprint.params import SAMPLE_RATE

QUICK_REFERENCES = 3
QUICK_EVALUATIONS = 6
GENERATED_SECONDS = 30.0


def _generator(weights: Path | None) -> Generator:
    if weights is None:
        return shipped()
    if not weights.is_file():
        raise GanError(f"--weights {weights}: no such file (train one with `castwatch gan train`)")
    return load(weights)


def _out_file(path: Path) -> None:
    if not path.parent.is_dir():
        raise GanError(f"{path}: the folder {path.parent} does not exist; create it first")


def _music_files(corpus: Path | None) -> list[Path]:
    """The corpus folder's audio files, or the public benchmark catalogue (fetched once) when none is given."""
    from fingerprint.audio import audio_files
    from fingerprint.bench.corpus import catalogue_tracks

    if corpus is None:
        try:
            return catalogue_tracks()
        except (RuntimeError, FileNotFoundError) as e:
            raise GanError(f"cannot fetch the public benchmark corpus: {e}") from e
    if not corpus.is_dir():
        raise GanError(f"--corpus {corpus}: not a directory of audio files")
    files = [Path(f) for f in audio_files([str(corpus)])]
    if not files:
        raise GanError(f"--corpus {corpus}: no audio files in it (WAV, FLAC, OGG, MP3, ...)")
    return files


def cmd_train(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from fingerprint.gan import train

    for option, value in (("--steps", args.steps), ("--threads", args.threads), ("--stats-clips", args.stats_clips)):
        if value < 1:
            raise GanError(f"{option} must be at least 1, got {value}")
    with threadpool_limits(args.threads):  # one BLAS thread: faster on a shared machine, and bitwise reproducible
        train.run(_music_files(args.corpus), args.out, args.steps, args.seed, args.stats_clips)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise GanError(f"--seconds must be positive, got {args.seconds}")
    _out_file(args.out)
    audio = _generator(args.weights).sample(args.seconds, args.seed)
    sf.write(args.out, audio, SAMPLE_RATE)
    print(f"wrote {args.out}: {args.seconds:g} s at {SAMPLE_RATE} Hz, seed {args.seed}", file=sys.stderr)
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from fingerprint.audio import decode
    from fingerprint.bench.degrade import mix_at_snr
    from fingerprint.gan.attack import Attack, Bounds
    from fingerprint.gan.robustness import build_index

    if args.evaluations < 1:
        raise GanError(f"--evaluations must be at least 1, got {args.evaluations}")
    try:
        bounds = Bounds(args.max_speed, args.max_pitch, args.max_eq_db)
    except ValueError as e:
        raise GanError(str(e)) from e
    audio = decode(args.reference)
    n = int(round(args.seconds * SAMPLE_RATE))
    if not 0 < n <= audio.shape[0]:
        raise GanError(f"--seconds {args.seconds:g}: the reference lasts {audio.shape[0] / SAMPLE_RATE:.1f} s")
    start = (audio.shape[0] - n) // 2 if args.start is None else int(round(args.start * SAMPLE_RATE))
    if not 0 <= start <= audio.shape[0] - n:
        raise GanError(f"--start {args.start:g}: a {args.seconds:g} s excerpt must fit in the reference's {audio.shape[0] / SAMPLE_RATE:.1f} s")
    excerpt = audio[start : start + n]
    generator = _generator(args.weights)
    attack = Attack(generator, build_index([(args.reference, audio)]), args.reference, excerpt, args.budget_db, bounds, args.seed)
    noise = mix_at_snr(excerpt, np.random.default_rng(args.seed).standard_normal(n), args.budget_db)
    started = time.perf_counter()
    result = attack.run(args.evaluations)
    args.out.mkdir(parents=True, exist_ok=True)
    sf.write(args.out / "adversarial.wav", result.adversarial, SAMPLE_RATE)
    sf.write(args.out / "overlay.wav", result.overlay, SAMPLE_RATE)
    record = {
        "reference": args.reference,
        "excerpt_start_s": start / SAMPLE_RATE,
        "excerpt_seconds": n / SAMPLE_RATE,
        "budget_db": args.budget_db,
        "bounds": {"speed": bounds.speed, "pitch": bounds.pitch, "eq_db": bounds.eq_db},
        "seed": args.seed,
        "search_seconds": round(time.perf_counter() - started, 1),
        "evidence_clean": attack.evidence(excerpt),
        "evidence_white_noise": attack.evidence(noise),
        "identified_white_noise": attack.identified(noise),
        **result.record(),
    }
    (args.out / "attack.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    verdict = "still identified" if result.identified else "no longer identified"
    print(
        f"{args.reference} at {args.budget_db:g} dB: evidence {record['evidence_clean']} clean,"
        f" {record['evidence_white_noise']} under white noise, {result.evidence} under the best overlay"
        f" of {len(result.trials)} tried: {verdict}; wrote {args.out}/adversarial.wav, overlay.wav, attack.json",
        file=sys.stderr,
    )
    return 0


def _budgets(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(b) for b in text.split(","))
    except ValueError as e:
        raise GanError(f"--budgets {text!r}: expected dB values separated by commas, like 20,10,5,0") from e
    return budgets


def _decoded_sample(files: list[Path], n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """n files drawn with the seed, decoded; an undecodable file is reported and the next one drawn instead."""
    from fingerprint.audio import AudioError, decode

    references = []
    for i in np.random.default_rng(seed).permutation(len(files)):
        if len(references) == n:
            break
        try:
            references.append((str(files[i]), decode(files[i])))
        except AudioError as e:
            print(f"skipped: {e}", file=sys.stderr)
    if not references:
        raise GanError(f"none of the {len(files)} files could be decoded; no references to attack")
    return sorted(references)


def _robustness_command(args: argparse.Namespace, budgets: tuple[float, ...], n_refs: int, evaluations: int) -> str:
    """The command line that reproduces a run, every setting spelled out."""
    words = ["castwatch", "robustness"]
    if args.quick:
        words.append("--quick")
    else:
        words += ["--references", str(n_refs), "--evaluations", str(evaluations)]
        words += ["--generated"] if args.generated else ["--corpus", str(args.corpus)] if args.corpus else []
    words += ["--budgets", ",".join(f"{b:g}" for b in budgets), "--seed", str(args.seed)]
    words += ["--weights", str(args.weights)] if args.weights else []
    return shlex.join(words)


def cmd_robustness(args: argparse.Namespace) -> int:
    from fingerprint.gan import robustness

    budgets = _budgets(args.budgets)
    n_refs = QUICK_REFERENCES if args.quick else args.references
    evaluations = QUICK_EVALUATIONS if args.quick else args.evaluations
    if n_refs < 1 or evaluations < 1:
        raise GanError(f"--references and --evaluations must be at least 1, got {n_refs} and {evaluations}")
    generator = _generator(args.weights)
    if args.quick or args.generated:
        references = [(f"generated-{s}", generator.sample(GENERATED_SECONDS, 10_000 + s)) for s in range(n_refs)]
    else:
        references = _decoded_sample(_music_files(args.corpus), n_refs, args.seed)
    started = time.perf_counter()

    def progress(o: robustness.Outcome) -> None:
        if not args.quiet:
            state = "identified" if o.identified else "missed"
            print(f"{o.reference} {o.budget_db:g} dB {o.attack}: {state}", file=sys.stderr)

    outcomes = robustness.evaluate(generator, references, budgets, evaluations, args.seed, progress)
    table = robustness.write_report(outcomes, args.out, _robustness_command(args, budgets, n_refs, evaluations))
    print(table)
    print(
        f"{len(references)} references, {evaluations} evaluations per search, {time.perf_counter() - started:.0f} s;"
        f" wrote {args.out}/robustness.md, robustness.png, outcomes.jsonl",
        file=sys.stderr,
    )
    return 0

"""The robustness suite: recall of the matcher under noise, random overlays and adversarial overlays.

For each reference (an excerpt of EXCERPT_SECONDS at a seeded position) and
each SNR budget, three interferences of equal power are mixed in:

- white noise (the baseline any benchmark reports);
- a random generator overlay (music-like audio nobody optimised);
- an adversarial overlay, searched by ``fingerprint.gan.attack``.

Recall is the share of references the matcher (default thresholds, top
match) still identifies. An attack that does not beat noise at equal budget
is not an attack; the adversarial recall is the number to raise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fingerprint.bench.degrade import mix_at_snr
from fingerprint.gan.attack import Attack
from fingerprint.gan.generator import Generator
from fingerprint.gan.png import line_plot, write_png
from fingerprint.index import Index, IndexBuilder
from fingerprint.landmarks import extract
from fingerprint.params import SAMPLE_RATE
from fingerprint.spectrum import n_frames_for

EXCERPT_SECONDS = 10.0
ATTACKS = ("white noise", "random overlay", "adversarial overlay")
DEFAULT_BUDGETS_DB = (20.0, 10.0, 5.0, 0.0)


@dataclass(frozen=True)
class Outcome:
    reference: str
    budget_db: float
    attack: str
    identified: bool
    evidence: int  # aligned anchors left for the true recording, without the matcher's threshold
    evaluations: int


def build_index(references: list[tuple[str, np.ndarray]]) -> Index:
    builder = IndexBuilder()
    for track_id, audio in references:
        builder.add(track_id, extract(audio), n_frames_for(audio.shape[0]))
    return builder.freeze()


def excerpt_of(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """EXCERPT_SECONDS at a random position (the whole recording if it is shorter)."""
    n = int(EXCERPT_SECONDS * SAMPLE_RATE)
    if audio.shape[0] <= n:
        return audio
    start = int(rng.integers(0, audio.shape[0] - n))
    return audio[start : start + n]


def evaluate(
    generator: Generator,
    references: list[tuple[str, np.ndarray]],
    budgets_db: tuple[float, ...],
    evaluations: int,
    seed: int,
    progress: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Every (reference, budget, attack) outcome; ``progress`` sees each as it is decided."""
    if not references:
        raise ValueError("the robustness suite needs at least one reference")
    index = build_index(references)
    rng = np.random.default_rng(seed)
    outcomes = []
    for number, (track_id, audio) in enumerate(references):
        excerpt = excerpt_of(audio, rng)
        for budget in budgets_db:
            attack = Attack(generator, index, track_id, excerpt, budget, seed=seed * 100_003 + number)
            noise_mix = mix_at_snr(excerpt, rng.standard_normal(excerpt.shape[0]), budget)
            random_mix, _ = attack.query(attack.random_candidate())
            searched = attack.run(evaluations)
            for outcome in (
                Outcome(track_id, budget, ATTACKS[0], attack.identified(noise_mix), attack.evidence(noise_mix), 1),
                Outcome(track_id, budget, ATTACKS[1], attack.identified(random_mix), attack.evidence(random_mix), 1),
                Outcome(track_id, budget, ATTACKS[2], searched.identified, searched.evidence, len(searched.trials)),
            ):
                outcomes.append(outcome)
                progress(outcome)
    return outcomes


def _per_cell(outcomes: list[Outcome], value: Callable[[list[Outcome]], float]) -> dict[str, dict[float, float]]:
    """attack -> budget (loudest first) -> ``value`` of that cell's outcomes."""
    table: dict[str, dict[float, float]] = {}
    for attack in ATTACKS:
        for budget in sorted({o.budget_db for o in outcomes}, reverse=True):
            table.setdefault(attack, {})[budget] = value([o for o in outcomes if o.attack == attack and o.budget_db == budget])
    return table


def recall(outcomes: list[Outcome]) -> dict[str, dict[float, float]]:
    """attack -> budget -> share identified."""
    return _per_cell(outcomes, lambda cell: float(np.mean([o.identified for o in cell])))


def markdown(outcomes: list[Outcome]) -> str:
    """Recall, and the median evidence left, per attack and budget: two markdown tables."""
    n_refs = len({o.reference for o in outcomes})
    tables = []
    for title, table, cell in (
        (f"recall of {n_refs} references", recall(outcomes), lambda v: f"{100 * v:.0f} %"),
        ("median evidence (aligned anchors)", _per_cell(outcomes, lambda c: float(np.median([o.evidence for o in c]))), lambda v: f"{v:g}"),
    ):
        budgets = list(next(iter(table.values())))
        lines = [f"| {title} | " + " | ".join(f"{b:g} dB" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
        lines += [f"| {attack} | " + " | ".join(cell(row[b]) for b in budgets) + " |" for attack, row in table.items()]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def plot(outcomes: list[Outcome], path: Path) -> None:
    """Recall (%) versus budget (dB), one line per attack: grey noise, blue random overlay, red adversarial."""
    table = recall(outcomes)
    series = [
        ([b for b in sorted(row)], [100 * row[b] for b in sorted(row)], colour)
        for row, colour in zip(table.values(), ((128, 128, 128), (31, 119, 180), (214, 39, 40)))
    ]
    write_png(path, line_plot(series, y_range=(0.0, 100.0)))


def write_report(outcomes: list[Outcome], out: Path, command: str) -> str:
    """robustness.md (table), robustness.png (plot) and outcomes.jsonl in ``out``; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(outcomes)
    (out / "robustness.md").write_text(f"Command: `{command}`\n\n{table}\n", encoding="utf-8")
    plot(outcomes, out / "robustness.png")
    with open(out / "outcomes.jsonl", "w", encoding="utf-8") as f:
        for o in outcomes:
            f.write(json.dumps(o.__dict__) + "\n")
    return table

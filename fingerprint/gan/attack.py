"""Adversarial overlays: search the generator's latent space for audio that hides a recording from the matcher.

The threat (Saadatpanah, Shafahi and Goldstein, ICML 2020): an uploader mixes
something into a recording, within a loudness budget, so that the
fingerprint no longer matches. Here the "something" is generated audio, the
budget is the signal-to-overlay ratio of the mix (SNR, dB), and the search
is gradient-free because the matcher is not differentiable:

1. random restarts: RESTARTS overlays from random latent paths;
2. local search from the best: a (1+1) evolution strategy perturbs the
   latent keypoints (and, when bounds are given, speed, pitch and EQ of the
   recording) with a step size adapted by the one-fifth success rule
   (Rechenberg), accepting candidates that do not raise the objective.

The objective is the matcher's evidence for the true recording: the number
of query anchors aligned with it (``Match.count``) under a matcher with no
decision threshold, so that the search sees progress below the threshold
too. Whether the recording is still identified is decided by the real
matcher with its default thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fingerprint.bench.degrade import mix_at_snr, pitch_shift, speed
from fingerprint.gan.generator import Generator, keypoints_for, patches_for
from fingerprint.index import Index
from fingerprint.landmarks import QUERY, extract
from fingerprint.matcher import Matcher
from fingerprint.params import SAMPLE_RATE

RESTARTS = 8
EQ_BANDS_HZ = (150.0, 500.0, 1500.0, 3000.0)
INITIAL_STEP = 0.5
MIN_STEP = 0.05


@dataclass(frozen=True)
class Bounds:
    """How far the attack may change the recording itself (0 disables a change)."""

    speed: float = 0.0  # |speed factor - 1|
    pitch: float = 0.0  # |pitch factor - 1|
    eq_db: float = 0.0  # |gain| of each EQ band

    def __post_init__(self) -> None:
        for name, value, limit in (("speed", self.speed, 0.2), ("pitch", self.pitch, 0.2), ("eq_db", self.eq_db, 24.0)):
            if not 0 <= value <= limit:
                raise ValueError(f"{name} bound must be in [0, {limit}], got {value}")


@dataclass(frozen=True)
class Candidate:
    """One point of the search: latent keypoints, and the recording's speed, pitch and EQ."""

    keys: np.ndarray  # keypoints x latent_dim
    speed: float = 1.0
    pitch: float = 1.0
    eq_db: tuple[float, ...] = (0.0,) * len(EQ_BANDS_HZ)


@dataclass
class Trial:
    """What one evaluation tried and what the matcher made of it."""

    phase: str  # "restart" or "local"
    evidence: int  # aligned anchors for the true recording (no threshold)
    speed: float
    pitch: float
    eq_db: list[float]
    step: float


@dataclass
class AttackResult:
    """The best candidate found, its audio and the whole search."""

    adversarial: np.ndarray
    overlay: np.ndarray
    evidence: int
    identified: bool
    trials: list[Trial]
    best: Trial

    def record(self) -> dict[str, object]:
        return {
            "evidence": self.evidence,
            "identified": self.identified,
            "evaluations": len(self.trials),
            "best": asdict(self.best),
            "trials": [asdict(t) for t in self.trials],
        }


def equalise(signal: np.ndarray, gains_db: tuple[float, ...]) -> np.ndarray:
    """Apply a smooth EQ: gains at EQ_BANDS_HZ, interpolated over log frequency, flat beyond the ends."""
    if not any(gains_db):
        return signal
    spectrum = np.fft.rfft(signal)
    freqs = np.maximum(np.fft.rfftfreq(signal.shape[0], 1 / SAMPLE_RATE), 1.0)
    gains = np.interp(np.log(freqs), np.log(EQ_BANDS_HZ), gains_db)
    return np.fft.irfft(spectrum * 10 ** (gains / 20), signal.shape[0]).astype(np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if x.shape[0] >= n else np.pad(x, (0, n - x.shape[0]))


class Attack:
    """Search overlays for one excerpt of one indexed recording at one SNR budget."""

    def __init__(
        self, generator: Generator, index: Index, track_id: str, excerpt: np.ndarray, budget_db: float,
        bounds: Bounds = Bounds(), seed: int = 0,
    ) -> None:  # fmt: skip
        self.generator = generator
        self.track_id = track_id
        self.excerpt = np.asarray(excerpt, np.float32)
        self.seconds = self.excerpt.shape[0] / SAMPLE_RATE
        self.budget_db = budget_db
        self.bounds = bounds
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.n_patches = patches_for(self.seconds)
        self.n_keys = keypoints_for(self.n_patches)
        self.evidence_matcher = Matcher(index, min_aligned=1, min_score=0.0)
        self.matcher = Matcher(index)

    def overlay(self, candidate: Candidate) -> np.ndarray:
        """The generated overlay of a candidate (the phase is the attack's own, fixed by its seed)."""
        path = self.generator.path_through(candidate.keys, self.n_patches)
        return self.generator.audio_of(path, self.seconds, np.random.default_rng(self.seed))

    def query(self, candidate: Candidate) -> tuple[np.ndarray, np.ndarray]:
        """The attacked excerpt and the overlay in it."""
        n = self.excerpt.shape[0]
        signal = self.excerpt
        if candidate.speed != 1.0:
            signal = _fit(speed(signal, candidate.speed), n)
        if candidate.pitch != 1.0:
            signal = pitch_shift(signal, SAMPLE_RATE, candidate.pitch)
        signal = equalise(signal, candidate.eq_db)
        overlay = self.overlay(candidate)
        return mix_at_snr(signal, overlay, self.budget_db), overlay

    def evidence(self, audio: np.ndarray) -> int:
        matches = self.evidence_matcher.match(extract(audio, QUERY), max_matches=32)
        return max((m.count for m in matches if m.track == self.track_id), default=0)

    def identified(self, audio: np.ndarray) -> bool:
        matches = self.matcher.match(extract(audio, QUERY))
        return bool(matches) and matches[0].track == self.track_id

    def random_candidate(self) -> Candidate:
        return Candidate(self.rng.standard_normal((self.n_keys, self.generator.latent_dim)).astype(np.float32))

    def perturb(self, candidate: Candidate, step: float) -> Candidate:
        """A neighbour: keypoints moved by ``step`` standard deviations, transforms by ``step`` of their bounds."""
        rng = self.rng
        keys = candidate.keys + step * rng.standard_normal(candidate.keys.shape).astype(np.float32)
        b = self.bounds
        new_speed = float(np.clip(candidate.speed + step * b.speed * rng.standard_normal(), 1 - b.speed, 1 + b.speed))
        new_pitch = float(np.clip(candidate.pitch + step * b.pitch * rng.standard_normal(), 1 - b.pitch, 1 + b.pitch))
        eq = np.clip(np.array(candidate.eq_db) + step * b.eq_db * rng.standard_normal(len(EQ_BANDS_HZ)), -b.eq_db, b.eq_db)
        return Candidate(keys, new_speed, new_pitch, tuple(float(g) for g in eq))

    def run(self, evaluations: int) -> AttackResult:
        """Spend ``evaluations`` matcher calls (at least one); stop early once no evidence is left."""
        if evaluations < 1:
            raise ValueError(f"evaluations must be at least 1, got {evaluations}")
        trials: list[Trial] = []
        step = INITIAL_STEP

        def evaluate(candidate: Candidate, phase: str) -> Trial:
            audio, _ = self.query(candidate)
            trial = Trial(phase, self.evidence(audio), candidate.speed, candidate.pitch, list(candidate.eq_db), step)
            trials.append(trial)
            return trial

        best_candidate = self.random_candidate()
        best = evaluate(best_candidate, "restart")
        while len(trials) < evaluations and best.evidence > 0:
            restart = len(trials) < RESTARTS
            candidate = self.random_candidate() if restart else self.perturb(best_candidate, step)
            trial = evaluate(candidate, "restart" if restart else "local")
            if not restart:  # one-fifth rule: grow the step on success, shrink it slowly on failure
                step = min(2.0, step * 1.5) if trial.evidence < best.evidence else max(MIN_STEP, step * 1.5 ** -0.25)
            if trial.evidence <= best.evidence:  # ties move too: a plateau is crossed, not stuck on
                best, best_candidate = trial, candidate
        adversarial, overlay = self.query(best_candidate)
        return AttackResult(adversarial, overlay, best.evidence, self.identified(adversarial), trials, best)

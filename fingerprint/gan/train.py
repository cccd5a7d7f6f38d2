"""Training the GAN on real music: log-mel patches from a corpus, generator against discriminator.

The generator maps a Gaussian latent to a patch; the discriminator, a
logistic classifier on patches, learns to tell real patches from generated
ones, and the generator learns to make it fail (the non-saturating loss of
Goodfellow et al. 2014). Two standard aids keep so small a pair stable:
instance noise on the discriminator's inputs (decaying to zero over the
first half of training) and a minibatch standard-deviation feature (Karras
et al. 2018) that lets the discriminator see a batch without variety, which
discourages the generator from collapsing onto a few patches.

Everything is drawn from one seed (initial weights, patch positions,
latents, noise), so a run is reproducible: the same corpus and seed give the
same weights on the same numpy and BLAS.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fingerprint.audio import AudioError, decode
from fingerprint.gan.generator import GanError, Generator
from fingerprint.gan.network import Adam, Mlp
from fingerprint.gan.png import spectrogram_image, write_png
from fingerprint.gan.spectral import (
    HOP, N_MELS, PATCH_STEPS, STEP_FRAMES, TEMPORAL_COMPONENTS, coarse, log_mel, normalise, temporal_basis,
)
from fingerprint.params import SAMPLE_RATE

LATENT_DIM = 64
GENERATOR_HIDDEN = (256, 512)
DISCRIMINATOR_HIDDEN = (512, 256)
BATCH = 64
LEARNING_RATE = 2e-4
REAL_LABEL = 0.9  # one-sided label smoothing: the discriminator never gets fully sure of real patches
INSTANCE_NOISE = 0.1
MIN_TRACK_SECONDS = 30.0
# Patches whose loudest cell is this far below the corpus's loudest are silence or fades: not music to learn.
QUIET_PATCH_DB = 50.0
LOG_EVERY = 200


@dataclass(frozen=True)
class Corpus:
    """Log-mel frames of every usable track, end to end, and where patches may start."""

    mel_db: np.ndarray  # steps x N_MELS
    starts: np.ndarray  # step indices where a patch lies inside one track and is not silence
    n_tracks: int
    seconds: float


def load_corpus(paths: list[Path], progress: Callable[[str], None]) -> Corpus:
    """Decode tracks of at least MIN_TRACK_SECONDS (others are skipped and said so) into log-mel frames."""
    mels, starts, offset, used = [], [], 0, 0
    for path in paths:
        try:
            samples = decode(path)
        except AudioError as e:
            progress(f"skipped: {e}")
            continue
        if samples.shape[0] < MIN_TRACK_SECONDS * SAMPLE_RATE:
            progress(f"skipped: {path}: shorter than {MIN_TRACK_SECONDS:.0f} s")
            continue
        mel = coarse(log_mel(samples)).astype(np.float32)
        mels.append(mel)
        starts.append(offset + np.arange(mel.shape[0] - PATCH_STEPS))
        offset += mel.shape[0]
        used += 1
    if not mels:
        raise GanError(f"no usable music in {len(paths)} files (need decodable tracks of {MIN_TRACK_SECONDS:.0f} s or more)")
    mel_db = np.concatenate(mels)
    candidates = np.concatenate(starts)
    loud = _patch_max(mel_db, candidates) > mel_db.max() - QUIET_PATCH_DB
    return Corpus(mel_db, candidates[loud], used, mel_db.shape[0] * STEP_FRAMES * HOP / SAMPLE_RATE)


def _patch_max(mel_db: np.ndarray, starts: np.ndarray) -> np.ndarray:
    frame_max = mel_db.max(axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(frame_max, PATCH_STEPS)
    return windows.max(axis=1)[starts]


def real_patches(corpus: Corpus, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random patches of the corpus on the network's scale (n x PATCH_STEPS x N_MELS)."""
    at = rng.choice(corpus.starts, n)
    return normalise(corpus.mel_db[at[:, None] + np.arange(PATCH_STEPS)])


def _with_batch_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x with one more column: the mean over features of the batch's standard deviation."""
    centred = x - x.mean(axis=0)
    std = np.sqrt((centred**2).mean(axis=0) + 1e-8)
    feature = np.full((x.shape[0], 1), std.mean(), x.dtype)
    return np.concatenate([x, feature], axis=1), centred, std


def _through_batch_std(grad: np.ndarray, centred: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. x from the gradient w.r.t. ``_with_batch_std(x)``."""
    batch, features = centred.shape
    return grad[:, :-1] + grad[:, -1:].sum() * centred / (batch * features * std)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _bce(logits: np.ndarray, target: float) -> float:
    """Mean binary cross-entropy of logits against a constant target."""
    return float(np.mean(np.logaddexp(0.0, logits) - target * logits))


@dataclass
class Gan:
    generator: Mlp
    discriminator: Mlp

    @classmethod
    def initialised(cls, rng: np.random.Generator) -> "Gan":
        patch = PATCH_STEPS * N_MELS
        return cls(
            Mlp.initialised([LATENT_DIM, *GENERATOR_HIDDEN, TEMPORAL_COMPONENTS * N_MELS], "tanh", rng, temporal_basis()),
            Mlp.initialised([patch + 1, *DISCRIMINATOR_HIDDEN, 1], "linear", rng),
        )

    def discriminate(self, x: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], tuple[list[np.ndarray], np.ndarray]]]:
        """Logits for patches x (batch x features) and a function from d loss / d logits to (parameter grads, d loss / d x)."""
        augmented, centred, std = _with_batch_std(x)
        logits, inputs = self.discriminator.forward(augmented)

        def backward(grad_logits: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
            grads, grad_in = self.discriminator.backward(logits, inputs, grad_logits)
            return grads, _through_batch_std(grad_in, centred, std)

        return logits, backward


def train(
    corpus: Corpus, steps: int, seed: int, log: Callable[[dict[str, float]], None]
) -> tuple[Generator, list[dict[str, float]]]:
    """Train for ``steps`` generator updates; return the generator and the logged history."""
    rng = np.random.default_rng(seed)
    gan = Gan.initialised(rng)
    g_opt = Adam(gan.generator.parameters, LEARNING_RATE)
    d_opt = Adam(gan.discriminator.parameters, LEARNING_RATE)
    history: list[dict[str, float]] = []
    window: list[tuple[float, float, float, float]] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        noise = INSTANCE_NOISE * max(0.0, 1.0 - 2.0 * step / steps)
        real = real_patches(corpus, BATCH, rng).reshape(BATCH, -1)
        fake = gan.generator(rng.standard_normal((BATCH, LATENT_DIM)).astype(np.float32))
        real_in = real + (noise * rng.standard_normal(real.shape)).astype(np.float32)
        fake_in = fake + (noise * rng.standard_normal(fake.shape)).astype(np.float32)
        real_logits, real_back = gan.discriminate(real_in)
        fake_logits, fake_back = gan.discriminate(fake_in)
        grads_real, _ = real_back((_sigmoid(real_logits) - REAL_LABEL) / BATCH)
        grads_fake, _ = fake_back(_sigmoid(fake_logits) / BATCH)
        d_opt.update([a + b for a, b in zip(grads_real, grads_fake)])
        d_loss = _bce(real_logits, REAL_LABEL) + _bce(fake_logits, 0.0)
        accuracy = 0.5 * (float(np.mean(real_logits > 0)) + float(np.mean(fake_logits < 0)))

        latents = rng.standard_normal((BATCH, LATENT_DIM)).astype(np.float32)
        fake, g_inputs = gan.generator.forward(latents)
        logits, back = gan.discriminate(fake + (noise * rng.standard_normal(fake.shape)).astype(np.float32))
        _, grad_fake = back((_sigmoid(logits) - 1.0) / BATCH)
        g_grads, _ = gan.generator.backward(fake, g_inputs, grad_fake)
        g_opt.update(g_grads)
        window.append((d_loss, _bce(logits, 1.0), accuracy, float(fake.reshape(BATCH, -1).std(axis=0).mean())))
        if step % LOG_EVERY == 0 or step == steps:
            d_mean, g_mean, acc_mean, spread = np.mean(window, axis=0)
            entry = {
                "step": step,
                "seconds": round(time.perf_counter() - started, 1),
                "d_loss": round(float(d_mean), 4),
                "g_loss": round(float(g_mean), 4),
                "d_accuracy": round(float(acc_mean), 4),
                "sample_spread": round(float(spread), 4),
            }
            history.append(entry)
            log(entry)
            window = []
    return Generator(gan.generator, LATENT_DIM), history


def untrained(seed: int) -> Generator:
    """A generator with the trained one's architecture and initial weights, never trained (for comparisons)."""
    return Generator(Gan.initialised(np.random.default_rng(seed)).generator, LATENT_DIM)


def sample_sheet(path: Path, generator: Generator, corpus: Corpus, seed: int) -> None:
    """PNG: two rows of real patches, then four rows of generated ones (dark = loud, low bands at the bottom)."""
    rng = np.random.default_rng(seed)
    real = real_patches(corpus, 16, rng)
    fake = generator.patches(rng.standard_normal((32, generator.latent_dim)))
    write_png(path, spectrogram_image(np.concatenate([real, fake]), columns=8, scale=4))


def run(
    tracks: list[Path], out: Path, steps: int, seed: int, stats_clips: int, say: Callable[[str], None] = print
) -> dict[str, object]:
    """The whole `castwatch gan train`: corpus, training, weights, history, sample sheet, statistics."""
    from fingerprint.gan import stats

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus = load_corpus(tracks, lambda message: print(message, file=sys.stderr))
    loaded = time.perf_counter() - started
    say(f"corpus: {corpus.n_tracks} tracks, {corpus.seconds / 3600:.2f} h, {corpus.starts.shape[0]} patch positions ({loaded:.0f} s)")
    with open(out / "history.jsonl", "w", encoding="utf-8") as history_file:

        def log(entry: dict[str, float]) -> None:
            history_file.write(json.dumps(entry) + "\n")
            history_file.flush()
            say(
                f"step {entry['step']:>6}  {entry['seconds']:>7.1f} s  D loss {entry['d_loss']:.3f}  G loss {entry['g_loss']:.3f}"
                f"  D accuracy {entry['d_accuracy']:.3f}  sample spread {entry['sample_spread']:.3f}"
            )

        generator, history = train(corpus, steps, seed, log)
    trained = time.perf_counter() - started
    generator.save(out / "generator.npz")
    sample_sheet(out / "samples.png", generator, corpus, seed)
    comparison = stats.compare(generator, untrained(seed), tracks, stats_clips, seed)
    summary = {
        "seed": seed,
        "steps": steps,
        "tracks": corpus.n_tracks,
        "corpus_hours": round(corpus.seconds / 3600, 3),
        "corpus_load_seconds": round(loaded, 1),
        "train_seconds": round(trained - loaded, 1),
        "weights_bytes": (out / "generator.npz").stat().st_size,
        "final": history[-1],
        "statistics": comparison,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    say(stats.table(comparison))
    say(f"wrote {out / 'generator.npz'} ({summary['weights_bytes'] / 1e6:.2f} MB), {out / 'samples.png'}, history.jsonl, summary.json")
    return summary

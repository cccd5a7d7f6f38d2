"""The trained generator: latent vectors to log-mel patches to audio.

A recording of any length is a path through latent space: one random
keypoint every KEYPOINT_PATCHES patches, interpolated between them, one
patch per step of half a patch, the patches cross-faded in the log-mel
domain and rendered to audio with Griffin-Lim. The seed draws the keypoints
and the phase, so the same seed gives the same samples, and two seeds give
unrelated spectral paths.

Weights ship in the package as ``generator.npz`` (plain arrays, no pickle),
stored as float16 to keep the file small and computed in float32.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fingerprint.gan.network import Mlp
from fingerprint.gan.spectral import HOP, N_MELS, PATCH_STEPS, STEP_FRAMES, TEMPORAL_COMPONENTS, fine, render, temporal_basis, to_db
from fingerprint.params import SAMPLE_RATE

WEIGHTS_FILE = "generator.npz"
FORMAT = "castwatch-gan-generator"
FORMAT_VERSION = 2
PATCH_STEP = PATCH_STEPS // 2  # patches overlap by half
KEYPOINT_PATCHES = 2  # a new latent keypoint every 2 patches (about 1 s)
_FADE = np.hanning(PATCH_STEPS + 2)[1:-1]


class GanError(Exception):
    """A GAN command cannot do what was asked: missing or damaged weights, an unusable corpus, bad settings."""


@dataclass(frozen=True)
class Generator:
    """A generator network and the size of its latent space."""

    network: Mlp
    latent_dim: int

    def patches(self, latents: np.ndarray) -> np.ndarray:
        """Patches (n x PATCH_STEPS x N_MELS, in [-1, 1]) for latents (n x latent_dim)."""
        return self.network(np.asarray(latents, np.float32)).reshape(-1, PATCH_STEPS, N_MELS)

    def latent_path(self, n_patches: int, rng: np.random.Generator) -> np.ndarray:
        """n_patches latents along a path through random keypoints."""
        return self.path_through(rng.standard_normal((keypoints_for(n_patches), self.latent_dim)), n_patches)

    def path_through(self, keys: np.ndarray, n_patches: int) -> np.ndarray:
        """n_patches latents interpolated between ``keys`` (one every KEYPOINT_PATCHES), at the prior's norm."""
        position = np.arange(n_patches) / KEYPOINT_PATCHES
        left = position.astype(int)
        frac = (position - left)[:, None]
        path = (1 - frac) * keys[left] + frac * keys[left + 1]
        # A straight line between two Gaussian samples passes near the origin,
        # where the generator was never trained: rescale to the prior's norm.
        scale = np.sqrt(self.latent_dim) / np.maximum(np.linalg.norm(path, axis=1, keepdims=True), 1e-9)
        return (path * scale).astype(np.float32)

    def mel_of(self, latents: np.ndarray) -> np.ndarray:
        """Cross-faded dB spectrogram (STFT frames x N_MELS) of consecutive patches half a patch apart."""
        db = to_db(self.patches(latents))
        n_steps = PATCH_STEP * (db.shape[0] - 1) + PATCH_STEPS
        total = np.zeros((n_steps, N_MELS))
        weight = np.zeros((n_steps, 1))
        for i, patch in enumerate(db):
            at = i * PATCH_STEP
            total[at : at + PATCH_STEPS] += _FADE[:, None] * patch
            weight[at : at + PATCH_STEPS] += _FADE[:, None]
        return fine(total / weight)

    def audio_of(self, latents: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
        """``seconds`` of 8 kHz float32 audio from latents (which must cover them), phase from ``rng``."""
        n = int(round(seconds * SAMPLE_RATE))
        audio = render(self.mel_of(latents), rng)
        if audio.shape[0] < n:
            raise ValueError(f"{len(latents)} latents make {audio.shape[0]} samples, {n} asked; use patches_for")
        return audio[:n]

    def sample(self, seconds: float, seed: int) -> np.ndarray:
        """``seconds`` of mono float32 audio at 8 kHz, peak 0.9; the same seed gives the same audio."""
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        rng = np.random.default_rng(seed)
        return self.audio_of(self.latent_path(patches_for(seconds), rng), seconds, rng)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the weights as float16 arrays in a compressed ``.npz`` that ``load`` reads (no pickle)."""
        arrays = {f"w{i}": w.astype(np.float16) for i, w in enumerate(self.network.weights)}
        arrays |= {f"b{i}": b.astype(np.float16) for i, b in enumerate(self.network.biases)}
        meta = np.array([FORMAT_VERSION, self.latent_dim, PATCH_STEPS, N_MELS, TEMPORAL_COMPONENTS], np.int64)
        np.savez_compressed(path, format=np.array(FORMAT), meta=meta, **arrays)


def patches_for(seconds: float) -> int:
    """Patches half a patch apart needed to cover ``seconds`` of audio."""
    steps = int(np.ceil((seconds * SAMPLE_RATE / HOP + 2) / STEP_FRAMES))
    return max(1, int(np.ceil(max(0, steps - PATCH_STEPS) / PATCH_STEP)) + 1)


def keypoints_for(n_patches: int) -> int:
    """Latent keypoints a path of n_patches passes through."""
    return n_patches // KEYPOINT_PATCHES + 2


def load(path: str | os.PathLike[str]) -> Generator:
    """Read generator weights written by ``Generator.save``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise GanError(f"{path}: not castwatch generator weights (format {str(data['format'])!r})")
            version, latent_dim, patch_steps, n_mels, components = (int(v) for v in data["meta"])
            n_layers = sum(1 for name in data.files if name.startswith("w"))
            weights = [data[f"w{i}"].astype(np.float32) for i in range(n_layers)]
            biases = [data[f"b{i}"].astype(np.float32) for i in range(n_layers)]
    except (OSError, KeyError, ValueError) as e:
        raise GanError(f"{path}: cannot read generator weights: {e}") from e
    shape = (PATCH_STEPS, N_MELS, TEMPORAL_COMPONENTS)
    if version != FORMAT_VERSION or (patch_steps, n_mels, components) != shape:
        raise GanError(
            f"{path}: generator v{version} for {patch_steps}x{n_mels} patches of {components} components;"
            f" this castwatch reads v{FORMAT_VERSION} for {shape[0]}x{shape[1]} of {shape[2]}: retrain with `castwatch gan train`"
        )
    if weights[0].shape[0] != latent_dim or weights[-1].shape[1] != TEMPORAL_COMPONENTS * N_MELS:
        raise GanError(f"{path}: layer shapes do not fit a {latent_dim}-d latent and {TEMPORAL_COMPONENTS}x{N_MELS} outputs")
    return Generator(Mlp(weights, biases, "tanh", temporal_basis()), latent_dim)


def shipped_weights() -> Path:
    """Path of the weights inside the installed package."""
    return Path(str(importlib.resources.files(__package__) / WEIGHTS_FILE))


@functools.cache
def shipped() -> Generator:
    """The generator trained by the project (loaded once per process)."""
    return load(shipped_weights())


def generate(seconds: float, seed: int) -> np.ndarray:
    """``seconds`` of music-like 8 kHz float32 audio from the shipped generator; same seed, same audio."""
    return shipped().sample(seconds, seed)

"""The GAN generator: gradients, spectral round trips, the shipped weights, determinism and distinctness."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from fingerprint.gan import GanError, generate, load, shipped
from fingerprint.gan.generator import shipped_weights
from fingerprint.gan.network import Adam, Mlp
from fingerprint.gan.png import line_plot, spectrogram_image, write_png
from fingerprint.gan.robustness import build_index
from fingerprint.gan.spectral import N_MELS, coarse, fine, istft, log_mel, stft
from fingerprint.gan.train import _through_batch_std, _with_batch_std
from fingerprint.landmarks import QUERY, extract
from fingerprint.matcher import Matcher
from fingerprint.params import SAMPLE_RATE


def numeric_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        up = f()
        x[i] = saved - eps
        down = f()
        x[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("output, with_basis", [("tanh", True), ("tanh", False), ("linear", False)])
def test_mlp_backward_matches_finite_differences(output: str, with_basis: bool) -> None:
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((3, 2)) if with_basis else None  # 2 components x 3 columns -> 3 rows x 3 columns
    net = Mlp.initialised([5, 7, 6, 6 if with_basis else 3], output, rng, basis)
    net.weights = [w.astype(np.float64) for w in net.weights]
    net.biases = [b.astype(np.float64) for b in net.biases]
    x = rng.standard_normal((4, 5))
    target = rng.standard_normal((4, 9 if with_basis else 3))

    def loss() -> float:
        return float(((net(x) - target) ** 2).sum())

    out, inputs = net.forward(x)
    grads, grad_x = net.backward(out, inputs, 2 * (out - target))
    for analytic, array in zip(grads, net.parameters):
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_x, numeric_gradient(loss, x), rtol=1e-4, atol=1e-6)


def test_batch_std_feature_gradient() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3))
    weights = rng.standard_normal(4)

    def loss() -> float:
        return float((_with_batch_std(x)[0] @ weights).sum())

    augmented, centred, std = _with_batch_std(x)
    grad = _through_batch_std(np.tile(weights, (5, 1)), centred, std)
    np.testing.assert_allclose(grad, numeric_gradient(loss, x), rtol=1e-4, atol=1e-6)


def test_adam_minimises_a_quadratic() -> None:
    x = np.array([3.0, -2.0])
    opt = Adam([x], learning_rate=0.1, beta1=0.9)
    for _ in range(300):
        opt.update([2 * x])
    assert np.abs(x).max() < 0.05


def test_stft_round_trip_and_coarse_fine_steps() -> None:
    x = np.random.default_rng(5).standard_normal(SAMPLE_RATE)
    np.testing.assert_allclose(istft(stft(x), x.shape[0]), x, atol=1e-9)
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    mel = log_mel(tone)
    assert mel.shape[1] == N_MELS and np.argmax(mel.mean(axis=0)) == np.argmax(log_mel(tone * 0.5).mean(axis=0))
    steps = coarse(mel)
    assert steps.shape == (mel.shape[0] // 4, N_MELS)
    ramp = np.repeat(np.arange(5.0)[:, None], N_MELS, axis=1)
    frames = fine(ramp)
    assert frames.shape == (20, N_MELS) and np.all(np.diff(frames[:, 0]) >= 0)
    assert frames[0, 0] == 0.0 and frames[-1, 0] == 4.0 and frames[9, 0] == pytest.approx(1.875)


def test_shipped_weights_are_small_and_load_fast() -> None:
    assert shipped_weights().stat().st_size < 4_000_000
    started = time.perf_counter()
    generator = load(shipped_weights())
    assert time.perf_counter() - started < 0.5
    assert generator.latent_dim == 64


def test_bad_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "g.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GanError, match="cannot read generator weights"):
        load(bad)
    np.savez(bad, format=np.array("something else"))
    with pytest.raises(GanError, match="not castwatch generator weights"):
        load(bad)


def test_generate_is_deterministic_fast_and_distinct_per_seed() -> None:
    shipped()
    started = time.perf_counter()
    a = generate(3.0, seed=7)
    elapsed = time.perf_counter() - started
    assert a.dtype == np.float32 and a.shape == (3 * SAMPLE_RATE,)
    assert elapsed < 0.5, f"3 s took {elapsed * 1000:.0f} ms"
    np.testing.assert_array_equal(a, generate(3.0, seed=7))
    b = generate(3.0, seed=8)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
    assert 0.89 < np.abs(a).max() <= 0.9 + 1e-6 and np.sqrt(np.mean(a**2)) > 0.05
    with pytest.raises(ValueError, match="positive"):
        generate(0.0, seed=1)


@pytest.mark.slow
def test_fifty_generated_recordings_are_each_identified_without_cross_matches() -> None:
    references = [(f"seed-{seed}", generate(20.0, seed)) for seed in range(50)]
    matcher = Matcher(build_index(references))
    wrong = []
    for track_id, audio in references:
        found = matcher.match(extract(audio[5 * SAMPLE_RATE : 13 * SAMPLE_RATE], QUERY))
        if [m.track for m in found] != [track_id]:
            wrong.append((track_id, [(m.track, m.count) for m in found]))
    assert not wrong


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = body
        at += 12 + length
    return chunks


def test_png_round_trip(tmp_path: Path) -> None:
    image = (np.arange(12 * 5 * 3) % 256).astype(np.uint8).reshape(12, 5, 3)
    write_png(tmp_path / "a.png", image)
    chunks = _png_chunks((tmp_path / "a.png").read_bytes())
    assert struct.unpack(">IIBB", chunks[b"IHDR"][:10]) == (5, 12, 8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(12, 1 + 15)
    np.testing.assert_array_equal(rows[:, 1:].reshape(12, 5, 3), image)
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "b.png", image.astype(np.float32))


def test_sheet_and_plot_images() -> None:
    patches = np.linspace(-1, 1, 3 * 4 * 6).reshape(3, 4, 6)
    sheet = spectrogram_image(patches, columns=2, scale=1, gap=1)
    assert sheet.shape == (2 * 7 + 1, 2 * 5 + 1)
    assert sheet[1, 4] == sheet[1:7, 1:5].min() < 255 == sheet[6, 1]  # loudest cell (top band, last step) darkest; quietest white
    plot = line_plot([([0.0, 10.0], [0.0, 100.0], (255, 0, 0))], y_range=(0.0, 100.0), size=(200, 100))
    assert plot.shape == (100, 200, 3) and ((plot == (255, 0, 0)).all(axis=2)).sum() > 50

"""Benchmark degradations, checked on synthesised signals (no downloads).

Each test measures the physical property the degradation is meant to have,
so a degradation that silently does nothing, or the wrong thing, fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import correlate, correlation_lags

from fingerprint.bench import degrade

SR = 16000


def harmonic_tone(f0: float, seconds: float, sr: int = SR) -> np.ndarray:
    """A steady tone with five harmonics (amplitudes 1/h), like a sustained instrument note."""
    t = np.arange(round(seconds * sr)) / sr
    return np.sum([np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)], axis=0).astype(np.float32)


def music_like(seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Plucked harmonic notes from a scale, four per second: aperiodic enough to align unambiguously."""
    scale_hz = [220.0, 247.0, 262.0, 294.0, 330.0, 349.0, 392.0, 440.0]
    t = np.arange(round(0.25 * sr)) / sr
    envelope = np.exp(-6 * t) * np.minimum(1, t / 0.01)
    notes = [
        envelope * sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
        for f0 in rng.choice(scale_hz, round(seconds * 4))
    ]
    return np.concatenate(notes).astype(np.float32)


def dominant_frequency(x: np.ndarray, sr: int = SR) -> float:
    """Frequency of the strongest spectral peak, refined by parabolic interpolation of the log spectrum."""
    zero_padding = 8
    magnitude = np.abs(np.fft.rfft(x * np.hanning(x.size), zero_padding * x.size))
    k = int(np.argmax(magnitude))
    left, centre, right = np.log(magnitude[k - 1 : k + 2])
    offset = 0.5 * (left - right) / (left - 2 * centre + right)
    return (k + offset) * sr / (zero_padding * x.size)


def tone_amplitude(x: np.ndarray, frequency: float, sr: int = SR) -> float:
    """Amplitude of the sinusoid at `frequency` (exact for whole numbers of periods)."""
    t = np.arange(x.size) / sr
    return float(2 * np.abs(np.mean(x * np.exp(-2j * np.pi * frequency * t))))


def best_lag(output: np.ndarray, reference: np.ndarray, max_lag: int) -> int:
    correlation = correlate(output, reference, mode="full", method="fft")
    lags = correlation_lags(output.size, reference.size, mode="full")
    allowed = np.abs(lags) <= max_lag
    return int(lags[allowed][np.argmax(correlation[allowed])])


def snr_db(signal: np.ndarray, mixed: np.ndarray) -> float:
    clean = signal.astype(np.float64)
    return float(10 * np.log10(np.mean(clean**2) / np.mean((mixed.astype(np.float64) - clean) ** 2)))


@pytest.mark.parametrize("target_db", [-5.0, 0.0, 12.5])
def test_mix_at_snr_gives_the_requested_snr(target_db: float) -> None:
    signal = harmonic_tone(220, 2)
    noise = degrade.pink_noise(SR // 3, np.random.default_rng(0))
    mixed = degrade.mix_at_snr(signal, noise, target_db)
    assert mixed.dtype == np.float32 and mixed.size == signal.size
    assert snr_db(signal, mixed) == pytest.approx(target_db, abs=1e-3)


def test_mix_at_snr_tiles_short_interference() -> None:
    signal = harmonic_tone(220, 1)
    noise = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    added = degrade.mix_at_snr(signal, noise, 0.0).astype(np.float64) - signal
    np.testing.assert_allclose(added[3000:6000], added[:3000], atol=1e-5)


def test_mix_at_snr_rejects_silent_interference() -> None:
    with pytest.raises(ValueError, match="silent"):
        degrade.mix_at_snr(harmonic_tone(220, 1), np.zeros(100, np.float32), 10.0)


def test_pink_noise_falls_3_db_per_octave() -> None:
    n = 2**18
    noise = degrade.pink_noise(n, np.random.default_rng(1)).astype(np.float64)
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(n)
    band_starts = 2.0 ** np.arange(-14, -2)  # octaves from 2^-14 to 2^-2 cycles per sample
    band_power_db = [10 * np.log10(power[(frequencies >= f) & (frequencies < 2 * f)].mean()) for f in band_starts]
    slope_db_per_octave = np.polyfit(np.log2(band_starts), band_power_db, 1)[0]
    assert slope_db_per_octave == pytest.approx(-3.0, abs=0.3)
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("factor", [0.95, 1.05])
def test_speed_scales_frequency_and_length(factor: float) -> None:
    tone = harmonic_tone(440, 2)
    faster = degrade.speed(tone, factor)
    assert abs(faster.size - tone.size / factor) <= 1
    assert dominant_frequency(faster) / 440 == pytest.approx(factor, rel=1e-3)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_time_stretch_keeps_pitch_and_changes_length(factor: float) -> None:
    tone = harmonic_tone(220, 3)
    stretched = degrade.time_stretch(tone, SR, factor)
    assert stretched.size == pytest.approx(tone.size / factor, rel=0.01)
    steady = stretched[SR // 4 : -SR // 4]
    assert dominant_frequency(steady) == pytest.approx(220, rel=0.01)
    # A coherent vocoder keeps a steady note steady: no beating between frames,
    # and the balance of the harmonics unchanged.
    block_rms = np.sqrt(np.mean(steady[: steady.size // 400 * 400].reshape(-1, 400) ** 2, axis=1))
    assert block_rms.std() / block_rms.mean() < 0.01
    for harmonic in (2, 3):
        ratio = tone_amplitude(steady, 220 * harmonic) / tone_amplitude(steady, 220)
        assert ratio == pytest.approx(1 / harmonic, rel=0.05)


def test_time_stretch_by_one_is_the_identity() -> None:
    signal = music_like(2, np.random.default_rng(2))
    np.testing.assert_allclose(degrade.time_stretch(signal, SR, 1.0), signal, atol=1e-5)


@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_pitch_shift_changes_frequency_and_keeps_length(factor: float) -> None:
    tone = harmonic_tone(330, 3)
    shifted = degrade.pitch_shift(tone, SR, factor)
    assert shifted.size == tone.size
    assert dominant_frequency(shifted[SR // 4 : -SR // 4]) / 330 == pytest.approx(factor, rel=2e-3)


def test_telephone_keeps_the_voice_band_only() -> None:
    t = np.arange(2 * SR) / SR
    signal = np.sum([np.sin(2 * np.pi * f * t) for f in (100, 1000, 3800)], axis=0).astype(np.float32)
    phone = degrade.telephone(signal, SR)
    assert phone.size == signal.size and phone.dtype == np.float32
    assert 20 * np.log10(tone_amplitude(phone, 1000)) == pytest.approx(0.0, abs=1.0)
    assert 20 * np.log10(tone_amplitude(phone, 100)) < -40
    assert 20 * np.log10(tone_amplitude(phone, 3800)) < -40


def click_decay(rt60: float, wet: float) -> tuple[float, float]:
    """Reverberate a click; return (energy fraction 300-600 ms after it, RT60 from the Schroeder curve)."""
    click = np.zeros(2 * SR, np.float32)
    click[SR // 10] = 1.0
    energy = degrade.reverb(click, SR, rt60=rt60, wet=wet, rng=np.random.default_rng(3))[SR // 10 :] ** 2
    late_fraction = energy[int(0.3 * SR) : int(0.6 * SR)].sum() / energy.sum()
    decay_db = 10 * np.log10(np.cumsum(energy[::-1])[::-1] / energy.sum() + 1e-30)
    seconds_from_5_to_25_db = (np.argmax(decay_db < -25) - np.argmax(decay_db < -5)) / SR
    return late_fraction, 3 * seconds_from_5_to_25_db


def test_reverb_lengthens_the_decay_of_a_click() -> None:
    dry_late, _ = click_decay(0.6, wet=0.0)
    late, measured_rt60 = click_decay(0.6, wet=1.0)
    longer_late, longer_rt60 = click_decay(1.2, wet=1.0)
    assert dry_late == 0.0
    assert late > 1e-4
    assert longer_late > 10 * late
    assert measured_rt60 == pytest.approx(0.6, rel=0.15)
    assert longer_rt60 == pytest.approx(1.2, rel=0.15)


CODEC_CASES = [(backend, kind) for backend in degrade.CODEC_BACKENDS for kind in degrade.CODEC_KINDS]


@pytest.mark.parametrize(("backend", "kind"), CODEC_CASES)
def test_codec_output_is_aligned_and_close_to_the_input(backend: str, kind: str) -> None:
    if backend == "ffmpeg" and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    signal = music_like(4, np.random.default_rng(4))
    decoded = degrade.codec(signal, SR, kbps=32, kind=kind, backend=backend)
    assert decoded.size == signal.size and decoded.dtype == np.float32
    assert abs(best_lag(decoded, signal, max_lag=SR // 10)) <= 2
    assert np.corrcoef(decoded, signal)[0, 1] > 0.9
    assert np.max(np.abs(decoded - signal)) > 1e-3, "a lossy codec cannot be exact"
    kbps = degrade.measured_kbps(signal, SR, kbps=32, kind=kind, backend=backend)
    assert (30 <= kbps <= 34) if kind == "mp3" else (12 <= kbps <= 48)


def test_codec_default_backend_follows_ffmpeg_availability() -> None:
    assert degrade.codec_backend() == ("ffmpeg" if shutil.which("ffmpeg") else "soundfile")


def test_codec_falls_back_to_soundfile_without_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg on PATH
    assert degrade.codec_backend() == "soundfile"
    signal = music_like(1, np.random.default_rng(9))
    assert np.corrcoef(degrade.codec(signal, SR), signal)[0, 1] > 0.9
    with pytest.raises(RuntimeError, match="ffmpeg is not on PATH"):
        degrade.codec(signal, SR, backend="ffmpeg")


def test_codec_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="aac"):
        degrade.codec(harmonic_tone(220, 1), SR, kind="aac")


@pytest.mark.parametrize("delay", [-37, 0, 250])
def test_alignment_undoes_a_delay(delay: int) -> None:
    reference = music_like(1, np.random.default_rng(5)).astype(np.float64)
    delayed = np.roll(reference, delay)
    np.testing.assert_array_equal(degrade._align(delayed, reference, 400)[400:-400], reference[400:-400])


def test_talk_over_cycles_prompts_with_pauses_at_the_snr() -> None:
    signal = harmonic_tone(220, 2)
    prompts = [np.full(800, 0.5, np.float32), np.full(1200, -0.5, np.float32)]
    mixed = degrade.talk_over(signal, prompts, SR, snr_db=6.0, pause_s=0.1)
    assert snr_db(signal, mixed) == pytest.approx(6.0, abs=1e-3)
    speech = mixed.astype(np.float64) - signal
    pause = SR // 10
    first_cycle = [(800, 1), (pause, 0), (1200, -1), (pause, 0)]
    position = 0
    for length, sign in first_cycle * 2:
        np.testing.assert_array_equal(np.sign(np.round(speech[position : position + length], 4)), sign)
        position += length


def test_same_seed_same_degradation() -> None:
    signal = music_like(1, np.random.default_rng(6))
    for seed_a, seed_b, equal in [(7, 7, True), (7, 8, False)]:
        noise_a = degrade.pink_noise(SR, np.random.default_rng(seed_a))
        noise_b = degrade.pink_noise(SR, np.random.default_rng(seed_b))
        room_a = degrade.reverb(signal, SR, rng=np.random.default_rng(seed_a))
        room_b = degrade.reverb(signal, SR, rng=np.random.default_rng(seed_b))
        assert np.array_equal(noise_a, noise_b) is equal
        assert np.array_equal(room_a, room_b) is equal


def test_loud_input_is_not_clipped() -> None:
    loud = 3 * harmonic_tone(220, 1) / np.max(np.abs(harmonic_tone(220, 1)))
    outputs = {
        "telephone": degrade.telephone(loud, SR),
        "reverb": degrade.reverb(loud, SR, wet=0.2, rng=np.random.default_rng(8)),
        "speed": degrade.speed(loud, 1.05),
        "codec": degrade.codec(loud, SR),
    }
    for name, output in outputs.items():
        assert output.dtype == np.float32, name
        assert np.max(np.abs(output)) > 2, f"{name} clipped a signal peaking at 3"


def test_stereo_input_is_rejected_with_advice() -> None:
    with pytest.raises(ValueError, match="mono"):
        degrade.speed(np.zeros((100, 2), np.float32), 1.05)

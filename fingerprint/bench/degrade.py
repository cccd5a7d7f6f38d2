"""Signal degradations that turn catalogue excerpts into realistic benchmark queries.

A broadcast rarely carries a recording untouched: presenters talk over it,
stations compress it to low bitrates, play it a few percent fast, phone-ins
band-limit it, and a microphone in a room adds reverberation. Each function here
models one of these so the benchmark can measure recall per degradation.

Conventions: every function takes and returns a float32 mono array at the
caller's sample rate `sr` (nothing assumes 16 kHz); randomness comes only from a
`numpy.random.Generator` passed in, so a seed reproduces a benchmark exactly;
nothing clips: levels may leave [-1, 1] and the caller normalises.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import soundfile
from scipy.signal import butter, correlate, correlation_lags, fftconvolve, get_window, resample_poly, sosfiltfilt

CODEC_KINDS = ("mp3", "vorbis")
CODEC_BACKENDS = ("ffmpeg", "soundfile")
TELEPHONE_SR = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MU_LAW_MU = 255
TIME_STRETCH_RANGE = (0.25, 4.0)
_CODEC_PEAK = 0.5  # encode at a fixed level with room for codec overshoot, so nothing clips
_CODEC_MAX_DELAY_S = 0.25  # LAME adds ~1100 samples at the codec rate, plus resampler delays
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_FFMPEG_FORMATS = {"mp3": ("libmp3lame", "mp3"), "vorbis": ("libvorbis", "ogg")}


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum (-3 dB per octave).

    Pink rather than white because crowd, traffic and studio noise put most of
    their energy in the low frequencies, where music's landmarks also are.
    """
    if n < 2:
        raise ValueError(f"pink noise needs at least 2 samples, got n={n}")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    frequencies = np.fft.rfftfreq(n)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(frequencies[1:])
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def mix_at_snr(signal: np.ndarray, interference: np.ndarray, snr_db: float) -> np.ndarray:
    """Add `interference`, scaled so that 10*log10(P_signal / P_interference) == snr_db.

    Powers are means over the whole excerpt, the definition a benchmark report
    can state in one line. The interference is tiled or cropped to the signal.
    """
    x = _mono(signal, "signal")
    noise = _mono(interference, "interference")
    if noise.size == 0:
        raise ValueError("interference is empty")
    noise = np.resize(noise, x.size)  # np.resize repeats the array to fill the length
    signal_power = np.mean(x**2)
    noise_power = np.mean(noise**2)
    if signal_power == 0 or noise_power == 0:
        raise ValueError("SNR is undefined when the signal or the interference is silent")
    gain = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (x + gain * noise).astype(np.float32)


def talk_over(
    signal: np.ndarray, speech: np.ndarray | Sequence[np.ndarray], sr: int, snr_db: float, pause_s: float = 0.3
) -> np.ndarray:
    """A presenter talking over the music: speech prompts cycled with short pauses, mixed at snr_db.

    Prompts are short, so several are chained (with the pauses a speaker makes)
    to cover the excerpt; the SNR counts those pauses, as a listener would hear them.
    """
    prompts = [speech] if isinstance(speech, np.ndarray) else list(speech)
    if not prompts:
        raise ValueError("talk_over needs at least one speech prompt")
    prompts = [_mono(prompt, "speech prompt") for prompt in prompts]
    pause = np.zeros(round(pause_s * sr))
    if sum(prompt.size for prompt in prompts) + pause.size == 0:
        raise ValueError("speech prompts and pause are all empty")
    n = _mono(signal, "signal").size
    pieces: list[np.ndarray] = []
    covered = 0
    while covered < n:
        prompt = prompts[len(pieces) // 2 % len(prompts)]
        pieces += [prompt, pause]
        covered += prompt.size + pause.size
    return mix_at_snr(signal, np.concatenate(pieces)[:n], snr_db)


def codec_backend() -> str:
    """Which lossy encoder `codec` uses by default: ffmpeg when installed, else libsndfile's own.

    ffmpeg is the encoder broadcasters actually use; libsndfile (inside the
    soundfile wheel) keeps the benchmark runnable where ffmpeg is missing.
    """
    return "ffmpeg" if shutil.which("ffmpeg") else "soundfile"


def codec(signal: np.ndarray, sr: int, kbps: int = 32, kind: str = "mp3", backend: str | None = None) -> np.ndarray:
    """Encode and decode with a lossy codec (`kind` "mp3" or "vorbis") at about `kbps`.

    Low-bitrate streams remove quiet spectral detail, which is where weak
    landmarks die. The decoder's delay is removed by cross-correlation, so the
    output is time-aligned with the input (a benchmark checks reported offsets).
    Measured with `measured_kbps` on 30 s excerpts of the catalogue at 16 kHz,
    kbps=32: MP3 32.1 kbps with either backend; Vorbis 28.6-30.5 (ffmpeg, ABR)
    and 29.9-30.0 (soundfile). libsndfile's Vorbis is VBR only, so its quality
    is searched to approach `kbps`; it cannot go below ~30 kbps at 16 kHz mono.
    """
    x = _mono(signal, "signal")
    chosen = _check_codec(kind, backend)
    gain = _codec_gain(x)
    decoded = _decode(_encode(x * gain, sr, kbps, kind, chosen), sr, kind, chosen) / gain
    return _align(decoded, x, round(_CODEC_MAX_DELAY_S * sr)).astype(np.float32)


def measured_kbps(signal: np.ndarray, sr: int, kbps: int = 32, kind: str = "mp3", backend: str | None = None) -> float:
    """Actual bitrate of what `codec` encodes, container overhead included.

    Encoders round to the bitrates they support and Vorbis is variable, so a
    benchmark should report this number rather than the one it asked for.
    """
    x = _mono(signal, "signal")
    return _kbps(_encode(x * _codec_gain(x), sr, kbps, kind, _check_codec(kind, backend)), x.size, sr)


def telephone(signal: np.ndarray, sr: int) -> np.ndarray:
    """A phone line: 8 kHz sampling, 300-3400 Hz band, 8-bit mu-law (G.711), back at `sr`.

    Phone-ins and studio hybrids carry music this way; the fingerprint must
    survive losing everything below 300 Hz and above 3.4 kHz. The mu-law
    quantiser is driven at the band-limited signal's peak, so it never clips.
    """
    x = _mono(signal, "signal")
    narrow = _resample(x, sr, TELEPHONE_SR)
    band = sosfiltfilt(butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=TELEPHONE_SR, output="sos"), narrow)
    peak = np.max(np.abs(band), initial=0.0)
    if peak > 0:
        band = _mu_law_round_trip(band / peak) * peak
    return _fit_length(_resample(band, TELEPHONE_SR, sr), x.size).astype(np.float32)


def reverb(signal: np.ndarray, sr: int, rt60: float = 0.6, wet: float = 0.5, *, rng: np.random.Generator) -> np.ndarray:
    """Room reverberation: a synthetic impulse response, mixed `wet` : (1 - wet) with the dry signal.

    Music picked up by a microphone in a room smears in time, which blurs the
    spectral peaks landmarks are built from. The response is exponentially
    decaying noise (-60 dB at rt60 seconds) plus a few early reflections,
    normalised to unit energy so the wet part has about the dry level.
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive seconds, got {rt60}")
    if not 0 <= wet <= 1:
        raise ValueError(f"wet must be in [0, 1], got {wet}")
    x = _mono(signal, "signal")
    n_response = max(1, round(rt60 * sr))
    t = np.arange(n_response) / sr
    response = rng.standard_normal(n_response) * 10 ** (-3 * t / rt60)
    reflection_times = rng.uniform(0.005, 0.05, size=6)
    reflection_indices = np.minimum(np.round(reflection_times * sr).astype(int), n_response - 1)
    reflection_gains = rng.choice([-1.0, 1.0], 6) * rng.uniform(2, 5, 6) * 10 ** (-3 * reflection_times / rt60)
    response[reflection_indices] += reflection_gains
    response /= np.sqrt(np.sum(response**2))
    wet_signal = fftconvolve(x, response)[: x.size]
    return ((1 - wet) * x + wet * wet_signal).astype(np.float32)


def speed(signal: np.ndarray, factor: float) -> np.ndarray:
    """Play faster by `factor`, pitch and tempo together, like a turntable or tape sped up.

    Radio stations speed records up a few percent to fit schedules. The output
    has len/factor samples and every frequency is multiplied by factor. The
    factor is applied as the nearest fraction with denominator <= 1000 (within
    ~1e-6 of the factors broadcasts use) so polyphase resampling stays cheap.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    ratio = Fraction(factor).limit_denominator(1000)
    return resample_poly(_mono(signal, "signal"), ratio.denominator, ratio.numerator).astype(np.float32)


def time_stretch(signal: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Change tempo by `factor` (output len/factor samples) keeping the pitch.

    Stations time-compress programmes to fit slots. This is a phase vocoder
    with identity phase locking (Laroche & Dolson 1999): only spectral peaks get
    their phase advanced from their measured frequency, and each peak's
    neighbouring bins keep their phase offset to it, which keeps partials
    coherent and avoids the "phasy" sound of a plain phase vocoder. Windows are
    ~64 ms (good frequency resolution for music) with 75 % overlap on output.
    """
    low, high = TIME_STRETCH_RANGE
    if not low <= factor <= high:
        raise ValueError(f"time_stretch factor must be in [{low}, {high}], got {factor}")
    x = _mono(signal, "signal")
    n_out = round(x.size / factor)
    n_fft = 2 ** max(5, round(np.log2(0.064 * sr)))
    hop_out = n_fft // 4
    window = get_window("hann", n_fft)
    n_frames = n_out // hop_out + 2
    starts = np.round(np.arange(n_frames) * hop_out * factor).astype(int)
    padded = np.pad(x, (n_fft // 2, max(0, starts[-1] + n_fft - x.size - n_fft // 2)))
    bin_frequencies = 2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft  # radians per sample
    bins = np.arange(bin_frequencies.size)
    output = np.zeros(n_frames * hop_out + n_fft)
    window_sum = np.zeros_like(output)
    previous_phase = synthesis_phase = np.zeros(bins.size)
    for k, start in enumerate(starts):
        spectrum = np.fft.rfft(window * padded[start : start + n_fft])
        magnitude, phase = np.abs(spectrum), np.angle(spectrum)
        if k == 0:
            synthesis_phase = phase
        else:
            hop_in = start - starts[k - 1]
            peaks = _spectral_peaks(magnitude)
            deviation = phase[peaks] - previous_phase[peaks] - bin_frequencies[peaks] * hop_in
            deviation = (deviation + np.pi) % (2 * np.pi) - np.pi
            peak_phase = synthesis_phase[peaks] + (bin_frequencies[peaks] + deviation / hop_in) * hop_out
            owner = np.searchsorted((peaks[:-1] + peaks[1:]) / 2, bins)
            synthesis_phase = peak_phase[owner] + phase - phase[peaks][owner]
        frame = np.fft.irfft(magnitude * np.exp(1j * synthesis_phase), n_fft) * window
        output[k * hop_out : k * hop_out + n_fft] += frame
        window_sum[k * hop_out : k * hop_out + n_fft] += window**2
        previous_phase = phase
    output /= np.maximum(window_sum, 1e-3 * window_sum.max())
    return output[n_fft // 2 : n_fft // 2 + n_out].astype(np.float32)


def pitch_shift(signal: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Multiply every frequency by `factor` keeping the tempo (and the length).

    Used by infringers to dodge fingerprinting. Done as a time stretch by
    1/factor followed by a speed change by factor, which cancel in length.
    """
    low, high = TIME_STRETCH_RANGE
    if not 1 / high <= factor <= 1 / low:
        raise ValueError(f"pitch_shift factor must be in [{1 / high}, {1 / low}], got {factor}")
    x = _mono(signal, "signal")
    return _fit_length(speed(time_stretch(x, sr, 1 / factor), factor), x.size).astype(np.float32)


def _mono(signal: np.ndarray, name: str) -> np.ndarray:
    """Validate a mono signal and return it as float64, the precision the DSP works in."""
    array = np.asarray(signal)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D mono array, got shape {array.shape}; mix channels down first")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {array.dtype}; convert integer PCM first")
    return array.astype(np.float64)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad to exactly n samples (resamplers round lengths)."""
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def _resample(x: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Polyphase resampling between integer sample rates."""
    if from_sr == to_sr:
        return x
    ratio = Fraction(to_sr, from_sr)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def _mu_law_round_trip(x: np.ndarray) -> np.ndarray:
    """G.711-style mu-law: compress, quantise to 255 symmetric 8-bit levels (zero exact), expand."""
    compressed = np.sign(x) * np.log1p(MU_LAW_MU * np.abs(x)) / np.log1p(MU_LAW_MU)
    quantised = np.round(compressed * 127) / 127
    return np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(MU_LAW_MU)) / MU_LAW_MU


def _spectral_peaks(magnitude: np.ndarray) -> np.ndarray:
    """Indices of local maxima of a magnitude spectrum (at least one: the global maximum)."""
    inner = magnitude[1:-1]
    peaks = np.flatnonzero((inner > magnitude[:-2]) & (inner >= magnitude[2:])) + 1
    return peaks if peaks.size else np.array([np.argmax(magnitude)])


def _align(decoded: np.ndarray, reference: np.ndarray, max_lag: int) -> np.ndarray:
    """Shift `decoded` by the lag (within +-max_lag) that best correlates it with `reference`; fit its length."""
    correlation = correlate(decoded, reference, mode="full", method="fft")
    lags = correlation_lags(decoded.size, reference.size, mode="full")
    allowed = np.abs(lags) <= max_lag
    lag = int(lags[allowed][np.argmax(correlation[allowed])])
    shifted = decoded[lag:] if lag >= 0 else np.pad(decoded, (-lag, 0))
    return _fit_length(shifted, reference.size)


def _kbps(encoded: bytes, n_samples: int, sr: int) -> float:
    return len(encoded) * 8 / (n_samples / sr) / 1000


def _codec_gain(x: np.ndarray) -> float:
    """Gain that puts the peak at a fixed level: encoders clip beyond full scale and decoders overshoot."""
    peak = np.max(np.abs(x), initial=0.0)
    return _CODEC_PEAK / peak if peak > 0 else 1.0


def _check_codec(kind: str, backend: str | None) -> str:
    """Validate the codec choice; return the backend to use."""
    if kind not in CODEC_KINDS:
        raise ValueError(f"codec kind must be one of {CODEC_KINDS}, got {kind!r}")
    chosen = backend or codec_backend()
    if chosen not in CODEC_BACKENDS:
        raise ValueError(f"codec backend must be one of {CODEC_BACKENDS}, got {chosen!r}")
    if chosen == "ffmpeg" and not shutil.which("ffmpeg"):
        raise RuntimeError("codec backend 'ffmpeg' requested but ffmpeg is not on PATH; install it or use soundfile")
    return chosen


def _encode(x: np.ndarray, sr: int, kbps: int, kind: str, backend: str) -> bytes:
    if backend == "ffmpeg":
        encoder, container = _FFMPEG_FORMATS[kind]
        raw_input = ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0"]
        arguments = [*raw_input, "-c:a", encoder, "-b:a", f"{kbps}k", "-f", container, "pipe:1"]
        return _ffmpeg(arguments, x.astype("<f4").tobytes())
    if kind == "mp3":  # libsndfile's CBR bitrate is max - level * (max - min) per MPEG version: invert it
        rate = min((r for r in _MP3_RATES if r >= sr), default=_MP3_RATES[-1])
        low, high = (32, 320) if rate >= 32000 else (8, 160) if rate >= 16000 else (8, 64)
        level = min(max((high - kbps) / (high - low), 0.0), 0.99)  # libsndfile rejects 1.0
        return _soundfile_encode(_resample(x, sr, rate), rate, kind, level)
    probe = x[: 10 * sr]  # libsndfile's Vorbis is VBR only: search the quality level that gives kbps
    low_level, high_level = 0.0, 1.0  # level 0 is the highest bitrate
    for _ in range(6):
        middle = (low_level + high_level) / 2
        if _kbps(_soundfile_encode(probe, sr, kind, middle), probe.size, sr) > kbps:
            low_level = middle
        else:
            high_level = middle
    return _soundfile_encode(x, sr, kind, (low_level + high_level) / 2)


def _decode(encoded: bytes, sr: int, kind: str, backend: str) -> np.ndarray:
    if backend == "ffmpeg":
        raw_output = ["-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"]
        decoded = _ffmpeg(["-f", _FFMPEG_FORMATS[kind][1], "-i", "pipe:0", *raw_output], encoded)
        return np.frombuffer(decoded, dtype="<f4").astype(np.float64)
    samples, rate = soundfile.read(io.BytesIO(encoded), dtype="float64")
    return _resample(samples, rate, sr)


def _soundfile_encode(x: np.ndarray, sr: int, kind: str, level: float) -> bytes:
    buffer = io.BytesIO()
    container = {"format": "MP3", "bitrate_mode": "CONSTANT"} if kind == "mp3" else {"format": "OGG"}
    soundfile.write(buffer, x, sr, compression_level=level, **container)
    return buffer.getvalue()


def _ffmpeg(arguments: list[str], stdin: bytes) -> bytes:
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *arguments]
    result = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"`{' '.join(command)}` failed with exit code {result.returncode}: {message}")
    return result.stdout

"""fingerprint.audio: every supported container and rate decodes to mono float32 at the engine rate.

Audio is synthesised in-process and written with soundfile (WAV, FLAC, OGG
Vorbis, MP3) or, for formats only ffmpeg reads, with the ffmpeg command line.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from fingerprint import audio
from fingerprint.audio import AudioError, audio_files, decode, is_url, resample
from fingerprint.landmarks import extract
from fingerprint.params import SAMPLE_RATE

TONE_HZ = 440.0
SECONDS = 2.0
AMPLITUDE = 0.5

# (soundfile format, extension, subtype); MP3 and OGG are written by libsndfile itself.
FORMATS = [
    ("WAV", "wav", "PCM_16"),
    ("FLAC", "flac", "PCM_16"),
    ("OGG", "ogg", "VORBIS"),
    ("MP3", "mp3", "MPEG_LAYER_III"),
]
RATES = [44100, 22050, 16000, 8000]


def tone(rate: int, hz: float = TONE_HZ, seconds: float = SECONDS, amplitude: float = AMPLITUDE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * hz * t)


def dominant_hz(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum) * rate / samples.shape[0])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def write(path: Path, data: np.ndarray, rate: int, fmt: str, subtype: str) -> Path:
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def assert_engine_signal(samples: np.ndarray, seconds: float, tolerance: float = 0.01) -> None:
    assert isinstance(samples, np.ndarray)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    expected = seconds * SAMPLE_RATE
    assert abs(samples.shape[0] - expected) <= tolerance * expected, (samples.shape, expected)


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    assert path is not None, "these tests need ffmpeg on PATH (apt-get install ffmpeg); CI has it"
    return path


# --- formats, rates, channels -------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize(("fmt", "ext", "subtype"), FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_decode_tone_at_engine_rate(tmp_path: Path, fmt: str, ext: str, subtype: str, rate: int, channels: int) -> None:
    mono = tone(rate)
    data = mono if channels == 1 else np.stack([mono, mono], axis=1)
    path = write(tmp_path / f"tone.{ext}", data, rate, fmt, subtype)

    samples = decode(path)

    assert_engine_signal(samples, SECONDS)
    assert dominant_hz(samples) == pytest.approx(TONE_HZ, abs=2.0)
    # Identical channels average to the same signal: the level is kept (not summed, not halved).
    assert rms(samples) == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.15)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize(("fmt", "ext", "subtype"), FORMATS, ids=[f[0] for f in FORMATS])
def test_opposite_phase_stereo_averages_to_silence(tmp_path: Path, fmt: str, ext: str, subtype: str, rate: int) -> None:
    left = tone(rate)
    path = write(tmp_path / f"opposite.{ext}", np.stack([left, -left], axis=1), rate, fmt, subtype)

    samples = decode(path)

    assert_engine_signal(samples, SECONDS)
    assert np.abs(samples).max() < 1e-3


def test_decode_accepts_str_and_pathlike_and_target_rate(tmp_path: Path) -> None:
    path = write(tmp_path / "tone.wav", tone(44100), 44100, "WAV", "PCM_16")
    from_str = decode(str(path))
    np.testing.assert_array_equal(from_str, decode(path))
    at_16k = decode(path, target=16000)
    assert at_16k.dtype == np.float32 and at_16k.shape == (32000,)
    assert dominant_hz(at_16k, 16000) == pytest.approx(TONE_HZ, abs=2.0)


def test_decoded_music_is_ready_for_the_extractor(tmp_path: Path) -> None:
    from fingerprint.synth import music

    x = music(6.0, seed=7)
    path = write(tmp_path / "music.flac", x, SAMPLE_RATE, "FLAC", "PCM_24")
    samples = decode(path)
    np.testing.assert_allclose(samples, x, atol=1e-5)  # 8 kHz mono FLAC: lossless, no resampling
    assert len(extract(samples)) > 0


# --- ffmpeg path ----------------------------------------------------------------------------------


def make_m4a(ffmpeg: str, path: Path, seconds: float = SECONDS) -> Path:
    subprocess.run(
        [ffmpeg, "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"sine=f=440:d={seconds}", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def test_m4a_decodes_through_ffmpeg(tmp_path: Path, ffmpeg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_m4a(ffmpeg, tmp_path / "tone.m4a")
    calls: list[str] = []
    real = audio._decode_ffmpeg

    def spy(source: str, target: int, exe: str) -> np.ndarray:
        calls.append(source)
        return real(source, target, exe)

    monkeypatch.setattr(audio, "_decode_ffmpeg", spy)
    samples = decode(path)

    assert calls == [str(path)]
    # AAC adds priming/padding samples: allow 2 % rather than 1 %.
    assert_engine_signal(samples, SECONDS, tolerance=0.02)
    assert dominant_hz(samples) == pytest.approx(TONE_HZ, abs=2.0)


def test_m4a_without_ffmpeg_says_ffmpeg_is_needed(tmp_path: Path, ffmpeg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_m4a(ffmpeg, tmp_path / "tone.m4a")
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    with pytest.raises(AudioError) as info:
        decode(path)
    assert str(path) in str(info.value)
    assert "ffmpeg" in str(info.value)


# --- errors ----------------------------------------------------------------------------------------


def good_wav_bytes(tmp_path: Path) -> bytes:
    path = write(tmp_path / "good.wav", tone(44100), 44100, "WAV", "PCM_16")
    return path.read_bytes()


def corrupt_files(tmp_path: Path) -> dict[str, Path]:
    wav = good_wav_bytes(tmp_path)
    files = {
        "truncated_header_wav": (tmp_path / "truncated.wav", wav[:30]),
        "garbage_wav": (tmp_path / "garbage.wav", b"RIFF" + b"\x00\xff" * 500),
        "random_bytes_mp3": (tmp_path / "random.mp3", np.random.default_rng(0).bytes(5000)),
        "empty_wav": (tmp_path / "empty.wav", b""),
        "empty_flac": (tmp_path / "empty.flac", b""),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {name: path for name, (path, _) in files.items()}


@pytest.mark.parametrize(
    "name", ["truncated_header_wav", "garbage_wav", "random_bytes_mp3", "empty_wav", "empty_flac"]
)
def test_corrupt_file_raises_audio_error_naming_it(tmp_path: Path, name: str) -> None:
    path = corrupt_files(tmp_path)[name]
    with pytest.raises(AudioError) as info:
        decode(path)
    assert str(info.value).startswith(f"{path}: ")  # named first, as every AudioError does
    assert info.value.__cause__ is not None  # the decoder's own error is chained, not clobbered


@pytest.mark.parametrize("name", ["truncated_header_wav", "random_bytes_mp3", "empty_wav"])
def test_corrupt_file_without_ffmpeg_still_raises_audio_error(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = corrupt_files(tmp_path)[name]
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    with pytest.raises(AudioError, match="cannot decode") as info:
        decode(path)
    assert str(info.value).startswith(f"{path}: ")


def test_wav_truncated_inside_data_raises_audio_error(tmp_path: Path) -> None:
    wav = good_wav_bytes(tmp_path)
    path = tmp_path / "half.wav"
    path.write_bytes(wav[: len(wav) // 2])
    with pytest.raises(AudioError):
        decode(path)


def test_missing_file_raises_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.wav"
    with pytest.raises(AudioError, match="no such file") as info:
        decode(path)
    assert str(path) in str(info.value)


def test_directory_raises_audio_error(tmp_path: Path) -> None:
    folder = tmp_path / "album.wav"  # an audio-looking name does not fool it
    folder.mkdir()
    with pytest.raises(AudioError, match="directory") as info:
        decode(folder)
    assert str(folder) in str(info.value)


# --- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("http://radio.example/stream", True),
        ("HTTPS://radio.example/live.mp3", True),
        ("rtmp://host/app", True),
        ("srt://host:9000", True),
        ("udp://239.0.0.1:1234", True),
        ("icecast://host/mount", True),
        ("radio.mp3", False),
        ("/srv/http://not-a-url.wav", False),
        ("file:///tmp/a.wav", False),
        ("", False),
    ],
)
def test_is_url(source: str, expected: bool) -> None:
    assert is_url(source) is expected


def test_url_without_ffmpeg_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    url = "http://radio.example/live.mp3"
    with pytest.raises(AudioError) as info:
        decode(url)
    message = str(info.value)
    assert url in message
    assert "ffmpeg" in message
    assert "install" in message


def test_unreachable_url_raises_audio_error_naming_it(ffmpeg: str) -> None:
    with socket.socket() as s:  # a local port with nobody listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/live.mp3"
    with pytest.raises(AudioError) as info:
        decode(url)
    assert url in str(info.value)


# --- directory expansion ---------------------------------------------------------------------------


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_audio_files_expands_directories_recursively_and_sorted(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    # Created in an order unrelated to the expected one: the result must not depend on it.
    touch(root, "sub/z.ogg", "b.wav", "notes.txt", "sub/deeper/y.WAV", "cover.jpg", "asub/x.flac")
    touch(root, "a.flac", "C.MP3", "sub/readme.md", "index/meta.json", "index/frames.npy", "clip.m4a")

    found = audio_files([str(root)])

    rel = [str(Path(p).relative_to(root)) for p in found]
    assert rel == ["C.MP3", "a.flac", "b.wav", "clip.m4a", "asub/x.flac", "sub/z.ogg", "sub/deeper/y.WAV"]
    assert all(p.startswith(str(root)) for p in found)  # ids are paths as given, joined


def test_audio_files_keeps_explicit_files_and_argument_order(tmp_path: Path) -> None:
    touch(tmp_path, "d1/b.wav", "d1/a.wav", "d2/c.ogg", "loose.txt", "single.mp3")
    args = [str(tmp_path / "d2"), str(tmp_path / "loose.txt"), str(tmp_path / "d1"), str(tmp_path / "single.mp3")]
    assert audio_files(args) == [
        str(tmp_path / "d2" / "c.ogg"),
        str(tmp_path / "loose.txt"),  # given explicitly: kept, so decode can report it
        str(tmp_path / "d1" / "a.wav"),
        str(tmp_path / "d1" / "b.wav"),
        str(tmp_path / "single.mp3"),
    ]


def test_audio_files_skips_ffmpeg_only_formats_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "a.wav", "b.m4a", "c.aac", "d.ogg")
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    assert audio_files([str(tmp_path)]) == [str(tmp_path / "a.wav"), str(tmp_path / "d.ogg")]
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: "/usr/bin/ffmpeg")
    assert audio_files([str(tmp_path)]) == [str(tmp_path / n) for n in ("a.wav", "b.m4a", "c.aac", "d.ogg")]


def test_audio_files_empty_directory(tmp_path: Path) -> None:
    assert audio_files([str(tmp_path)]) == []


# --- resampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "hz"), [(44100, 1000.0), (48000, 3000.0), (22050, 440.0), (11025, 2500.0)])
def test_resample_preserves_tone_frequency_and_length(rate: int, hz: float) -> None:
    x = tone(rate, hz=hz, seconds=1.5)
    y = resample(x, rate)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.shape[0] - 1.5 * SAMPLE_RATE) <= 1
    assert dominant_hz(y) == pytest.approx(hz, abs=2.0)
    assert rms(y[400:-400]) == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.05)


def test_resample_removes_content_above_the_new_nyquist() -> None:
    # 6 kHz cannot exist at 8 kHz; without an anti-alias filter it would fold to 2 kHz.
    y = resample(tone(44100, hz=6000.0), 44100)
    assert rms(y[400:-400]) < 0.01 * AMPLITUDE


def test_resample_to_same_rate_is_identity_as_float32() -> None:
    x = tone(SAMPLE_RATE)
    y = resample(x, SAMPLE_RATE)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, x.astype(np.float32))


def test_resample_upsamples() -> None:
    y = resample(tone(SAMPLE_RATE, hz=700.0), SAMPLE_RATE, target=16000)
    assert y.shape == (32000,)
    assert dominant_hz(y, 16000) == pytest.approx(700.0, abs=2.0)


@pytest.mark.parametrize("rate", [0, -8000])
def test_resample_rejects_nonpositive_rate(rate: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(100, np.float32), rate)

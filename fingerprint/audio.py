"""Decoding any audio file or URL to mono float32 at the engine rate.

soundfile (libsndfile) reads WAV, FLAC, OGG Vorbis/Opus and MP3 in-process;
ffmpeg, when installed, covers everything else (AAC, M4A, WMA, video
containers) and network sources (HTTP, Icecast, HLS). Every failure becomes an
``AudioError`` naming the source, so a batch job can report it and go on.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from fingerprint.params import SAMPLE_RATE

# Extensions picked up when a directory is given; soundfile reads the first
# group itself, ffmpeg is needed for the second.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"})
FFMPEG_EXTENSIONS = frozenset({".m4a", ".aac", ".wma", ".mka", ".webm", ".mp4", ".ac3"})
URL_PREFIXES = ("http://", "https://", "rtmp://", "rtsp://", "icecast://", "udp://", "srt://")


class AudioError(Exception):
    """A source could not be decoded; the message names it and says why."""


def is_url(source: str) -> bool:
    return source.lower().startswith(URL_PREFIXES)


def ffmpeg_path() -> str | None:
    """The ffmpeg executable, or None when it is not installed."""
    return shutil.which("ffmpeg")


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array; 1-D input is returned as is."""
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float64)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``) from ``rate`` to ``target``, as float32."""
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    if rate == target:
        return np.ascontiguousarray(samples, dtype=np.float32)
    g = math.gcd(int(rate), int(target))
    out = resample_poly(np.asarray(samples, dtype=np.float64), target // g, rate // g)
    return out.astype(np.float32)


# libsndfile reads the samples a cut-off WAV or AIFF still holds and only notes
# the shortfall in its log ("data : 32000 (should be 15978)").
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}  # written by streaming encoders that cannot seek back


def _decode_soundfile(path: str, target: int) -> np.ndarray:
    with sf.SoundFile(path) as f:
        data = f.read(dtype="float32", always_2d=True)
        rate = f.samplerate
        log = f.extra_info
    for declared, present in _SHORT_CHUNK.findall(log):
        if int(declared) not in _UNKNOWN_SIZES and int(declared) > int(present):
            raise AudioError(
                f"{path}: truncated: the header declares {declared} bytes of audio but only {present} are present"
            )
    return resample(to_mono(data), rate, target)


def _decode_ffmpeg(source: str, target: int, ffmpeg: str) -> np.ndarray:
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", source, "-vn", "-ac", "1", "-ar", str(target), "-f", "f32le", "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{source}: ffmpeg could not decode it: {detail[-1] if detail else 'exit ' + str(proc.returncode)}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def decode(source: str | os.PathLike[str], target: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples of a file or URL at ``target`` Hz.

    Raises ``AudioError`` for a missing, corrupt or unsupported source, with
    the source's name and the decoder's reason in the message.
    """
    source = os.fspath(source)
    ffmpeg = ffmpeg_path()
    if is_url(source):
        if ffmpeg is None:
            raise AudioError(f"{source}: reading URLs needs ffmpeg; install it (apt-get install ffmpeg)")
        return _decode_ffmpeg(source, target, ffmpeg)
    path = Path(source)
    if not path.exists():
        raise AudioError(f"{source}: no such file")
    if path.is_dir():
        raise AudioError(f"{source}: is a directory, expected an audio file")
    try:
        return _decode_soundfile(source, target)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        if ffmpeg is None:
            hint = "" if path.suffix.lower() not in FFMPEG_EXTENSIONS else "; this format needs ffmpeg (apt-get install ffmpeg)"
            raise AudioError(f"{source}: cannot decode: {e}{hint}") from e
        try:
            return _decode_ffmpeg(source, target, ffmpeg)
        except AudioError as e2:
            raise AudioError(f"{source}: cannot decode (soundfile: {e}; ffmpeg: {str(e2).split(': ', 1)[-1]})") from e2


def audio_files(paths: list[str]) -> list[str]:
    """Expand directories (recursively, sorted) into the audio files they hold; files pass as given."""
    known = SOUNDFILE_EXTENSIONS | (FFMPEG_EXTENSIONS if ffmpeg_path() else frozenset())
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out.extend(os.path.join(root, f) for f in sorted(files) if Path(f).suffix.lower() in known)
        else:
            out.append(p)
    return out

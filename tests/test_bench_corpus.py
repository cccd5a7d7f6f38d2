"""Benchmark corpus: the catalogue definition and the cache logic, without downloading anything.

Extractions are faked by marked directories in a temporary cache; the only
apt-get call asks for a package that does not exist, which fails locally.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from fingerprint.bench import corpus

CATALOGUE_PACKAGES = {
    "drascula-music", "ardentryst", "noiz2sa-data", "parsec47-data", "gunroar-data", "mu-cade-data",
    "torus-trooper-data", "tumiki-fighters-data", "a7xpg-data", "rrootage-data", "titanion-data",
    "neverball-common", "hex-a-hop-data", "powermanga-data", "tuxmath-data",
}  # fmt: skip
MISSING_PACKAGE = "no-such-package-castwatch"


def fake_extraction(cache_dir: Path, package: str) -> Path:
    """A cache entry as a completed fetch leaves it: the extraction root with its marker."""
    root = cache_dir / "corpus" / package
    root.mkdir(parents=True)
    (root / corpus.EXTRACTED_MARKER).write_text("fake\n")
    return root


def write_audio(path: Path, seconds: float, file_format: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samplerate = 1000  # tiny files: only the duration matters
    soundfile.write(path, np.zeros(round(seconds * samplerate), np.float32), samplerate, format=file_format)
    return path


def test_catalogue_tsv_lists_93_distinct_tracks() -> None:
    entries = corpus.catalogue_entries()
    assert len(entries) == 93
    assert len({entry.path for entry in entries}) == 93
    assert {entry.package for entry in entries} == CATALOGUE_PACKAGES
    assert all(entry.duration_s >= 30 for entry in entries)
    assert all(entry.path.startswith("/usr/share/") and entry.path.endswith(".ogg") for entry in entries)
    assert sum(entry.duration_s for entry in entries) / 3600 == pytest.approx(2.15, abs=0.01)


def test_marked_extraction_is_reused_without_apt(tmp_path: Path) -> None:
    root = fake_extraction(tmp_path, MISSING_PACKAGE)  # fetching this package would fail
    assert corpus.fetch_packages([MISSING_PACKAGE], tmp_path) == {MISSING_PACKAGE: root}


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_unknown_package_fails_with_the_package_name_and_apt_message(tmp_path: Path) -> None:
    interrupted = tmp_path / "corpus" / MISSING_PACKAGE
    interrupted.mkdir(parents=True)  # no marker: an interrupted fetch, which must be redone
    with pytest.raises(RuntimeError, match=MISSING_PACKAGE) as error:
        corpus.fetch_packages([MISSING_PACKAGE], tmp_path)
    assert "apt-get download" in str(error.value) and "Unable to locate" in str(error.value)
    assert not list((tmp_path / "corpus").glob(".fetch-*")), "scratch directory left behind"


def test_catalogue_tracks_maps_tsv_paths_into_the_cache(tmp_path: Path) -> None:
    entries = corpus.catalogue_entries()
    roots = {package: fake_extraction(tmp_path, package) for package in CATALOGUE_PACKAGES}
    for entry in entries:
        track = roots[entry.package] / entry.path.lstrip("/")
        track.parent.mkdir(parents=True, exist_ok=True)
        track.touch()
    tracks = corpus.catalogue_tracks(tmp_path)
    assert tracks == [roots[entry.package] / entry.path.lstrip("/") for entry in entries]
    tracks[-1].unlink()
    with pytest.raises(FileNotFoundError, match=entries[-1].path):
        corpus.catalogue_tracks(tmp_path)


def test_noncatalogue_music_keeps_audio_of_20_s_or_more(tmp_path: Path) -> None:
    roots = [fake_extraction(tmp_path, package) for package in corpus.NONCATALOGUE_PACKAGES]
    long_wav = write_audio(roots[0] / "usr/share/games/x/music/theme.wav", 25)
    long_flac = write_audio(roots[1] / "usr/share/y/sounds/level.flac", 20, "FLAC")
    write_audio(roots[2] / "usr/share/z/sounds/jingle.wav", 5)
    (roots[2] / "usr/share/z/readme.txt").write_text("not audio")
    (roots[2] / "usr/share/z/link.wav").symlink_to(long_wav)
    assert corpus.noncatalogue_music(tmp_path) == sorted([long_wav, long_flac])


def test_speech_files_are_the_wav_prompts_sorted(tmp_path: Path) -> None:
    root = fake_extraction(tmp_path, corpus.SPEECH_PACKAGE)
    prompts = [write_audio(root / "usr/share/asterisk/sounds/en" / name, 1) for name in ("b.wav", "a.wav")]
    (root / "usr/share/asterisk/sounds/en/a.gsm").write_bytes(b"\0")
    assert corpus.speech_files(tmp_path) == sorted(prompts)


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CASTWATCH_CACHE_DIR", str(tmp_path))
    assert corpus.default_cache_dir() == tmp_path
    monkeypatch.delenv("CASTWATCH_CACHE_DIR")
    assert corpus.default_cache_dir() == Path.home() / ".cache" / "castwatch"

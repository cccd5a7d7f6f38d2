"""Real recorded audio for the benchmark, fetched from Debian packages.

Benchmarks must run on real music (procedural signals flatter a fingerprinter),
yet the project may only reach package registries. Debian ships game soundtracks
and telephone prompts under free licences, and `apt-get download` + `dpkg-deb -x`
fetch and unpack them without root. Each package is unpacked once into a cache
directory and reused by every later run.

Cache layout (``<cache>`` is ``$CASTWATCH_CACHE_DIR`` or ``~/.cache/castwatch``)::

    <cache>/corpus/<package>/             extraction root of the package (usr/share/...)
    <cache>/corpus/<package>/.castwatch-extracted   marker: extraction completed
    <cache>/corpus/.fetch-<random>/       scratch for one fetch, removed afterwards

A package is extracted into scratch space, marked, then renamed into place, so an
interrupted fetch leaves no marked directory behind and is simply redone.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import soundfile

CATALOGUE_TSV = "public-tracks.tsv"
NONCATALOGUE_PACKAGES = ("frozen-bubble-data", "extremetuxracer-data", "pushover-data")
SPEECH_PACKAGE = "asterisk-core-sounds-en-wav"
NONCATALOGUE_MIN_DURATION_S = 20.0
MUSIC_SUFFIXES = frozenset({".ogg", ".wav", ".flac"})
EXTRACTED_MARKER = ".castwatch-extracted"
_TSV_COLUMNS = ["package", "path", "duration_s"]


class CatalogueEntry(NamedTuple):
    """One track of the public benchmark catalogue, as listed in the TSV."""

    package: str
    path: str  # absolute path as installed by the package, e.g. /usr/share/...
    duration_s: float


def default_cache_dir() -> Path:
    """Where downloads live when the caller names no directory.

    The corpus is ~300 MB and slow to fetch, so it belongs in a per-user cache
    that outlives work trees; `CASTWATCH_CACHE_DIR` moves it (e.g. in CI).
    """
    configured = os.environ.get("CASTWATCH_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "castwatch"


def catalogue_entries() -> list[CatalogueEntry]:
    """Parse the catalogue TSV shipped with the package.

    The TSV is the fixed definition of the public catalogue (so that results are
    comparable between runs); it is validated here so that a bad edit fails
    loudly instead of silently shrinking the benchmark.
    """
    text = (importlib.resources.files(__package__) / CATALOGUE_TSV).read_text(encoding="utf-8")
    reader = csv.reader(text.splitlines(), delimiter="\t")
    header = next(reader, None)
    if header != _TSV_COLUMNS:
        raise ValueError(f"{CATALOGUE_TSV}: expected header {_TSV_COLUMNS}, found {header}")
    entries = []
    for line_number, row in enumerate(reader, start=2):
        if len(row) != len(_TSV_COLUMNS):
            raise ValueError(f"{CATALOGUE_TSV}:{line_number}: expected 3 columns, found {row}")
        package, path, duration = row
        if not path.startswith("/"):
            raise ValueError(f"{CATALOGUE_TSV}:{line_number}: path must be absolute, found {path!r}")
        try:
            entries.append(CatalogueEntry(package, path, float(duration)))
        except ValueError as e:
            raise ValueError(f"{CATALOGUE_TSV}:{line_number}: duration must be seconds, found {duration!r}") from e
    return entries


def catalogue_tracks(cache_dir: Path | None = None) -> list[Path]:
    """Fetch the catalogue packages; return the local path of every TSV track, in TSV order."""
    entries = catalogue_entries()
    packages = list(dict.fromkeys(entry.package for entry in entries))
    roots = fetch_packages(packages, cache_dir)
    tracks = []
    for entry in entries:
        local = roots[entry.package] / entry.path.lstrip("/")
        if not local.is_file():
            raise FileNotFoundError(
                f"{entry.path} is listed in {CATALOGUE_TSV} for package {entry.package} but is not in "
                f"its extraction at {roots[entry.package]}; the Debian package may have changed: "
                f"update the TSV"
            )
        tracks.append(local)
    return tracks


def noncatalogue_music(cache_dir: Path | None = None) -> list[Path]:
    """Music that is not in the catalogue, for false-positive measurements.

    Short jingles and sound effects are left out (< 20 s): a query cut from them
    would mostly be silence or repetition, which says little about false matches.
    """
    roots = fetch_packages(NONCATALOGUE_PACKAGES, cache_dir)
    music = []
    for root in roots.values():
        for path in _audio_files(root, MUSIC_SUFFIXES):
            info = soundfile.info(str(path))
            if info.frames / info.samplerate >= NONCATALOGUE_MIN_DURATION_S:
                music.append(path)
    return sorted(music)


def speech_files(cache_dir: Path | None = None) -> list[Path]:
    """Real recorded speech (short 8 kHz telephone prompts) to talk over music."""
    roots = fetch_packages([SPEECH_PACKAGE], cache_dir)
    return sorted(_audio_files(roots[SPEECH_PACKAGE], frozenset({".wav"})))


def fetch_packages(packages: list[str] | tuple[str, ...], cache_dir: Path | None = None) -> dict[str, Path]:
    """Make sure each package is extracted in the cache; return package -> extraction root.

    Packages already extracted are not downloaded again. Progress goes to stderr
    because a first run downloads hundreds of megabytes.
    """
    corpus_dir = (cache_dir if cache_dir is not None else default_cache_dir()) / "corpus"
    roots = {}
    for number, package in enumerate(packages, start=1):
        root = corpus_dir / package
        if not (root / EXTRACTED_MARKER).is_file():
            print(f"fetching {package} ({number}/{len(packages)})...", file=sys.stderr, flush=True)
            _fetch_package(package, root)
        roots[package] = root
    return roots


def _fetch_package(package: str, root: Path) -> None:
    """Download and extract one package into `root`, atomically from the cache's point of view."""
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root.parent))
    try:
        _run(["apt-get", "download", package], package, cwd=scratch)
        debs = sorted(scratch.glob("*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {package}: expected one .deb, found {[d.name for d in debs]}")
        extracted = scratch / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(extracted)], package, cwd=scratch)
        (extracted / EXTRACTED_MARKER).write_text(f"{debs[0].name}\n", encoding="utf-8")
        if root.exists():  # without the marker (checked by the caller) it is an unfinished extraction
            shutil.rmtree(root)
        extracted.rename(root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(command: list[str], package: str, cwd: Path) -> None:
    """Run an apt/dpkg tool; turn any failure into an error that names the package and the tool's words."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise RuntimeError(
            f"cannot fetch {package}: {command[0]} is not installed (the corpus needs a Debian-based system)"
        ) from e
    if result.returncode != 0:
        missing = "Unable to locate" in result.stderr
        hint = " (if the package exists, run `apt-get update` first)" if missing else ""
        raise RuntimeError(
            f"cannot fetch {package}: `{' '.join(command)}` exited with {result.returncode}: "
            f"{result.stderr.strip()}{hint}"
        )


def _audio_files(root: Path, suffixes: frozenset[str]) -> list[Path]:
    """Regular audio files under `root`, skipping symlinks (packages symlink duplicates and host paths)."""
    return [
        path for path in root.rglob("*") if path.suffix.lower() in suffixes and path.is_file() and not path.is_symlink()
    ]

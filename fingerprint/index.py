"""In-memory inverted index: hash -> postings (reference anchor frames), in flat arrays.

Layout (frozen, read-only, memory-mappable):

- ``directory`` uint32[2**HASH_BITS + 1]: the postings of key ``k`` are
  ``records[directory[k]:directory[k + 1]]``;
- ``records`` of ``RECORD`` (6 bytes, packed), one per posting, sorted by
  (key, frame):
  - ``frame`` uint32: the posting's global anchor frame. Tracks are laid end
    to end on one global frame axis (``starts``), so one uint32 encodes both
    the track and the time, and offset voting needs no track column;
  - ``span`` uint8: the triplet's span dt3 in 1/DT3_SCALE frames, so that a
    hit gives its own speed estimate (reference span / query span);
  - ``pitch`` uint8: the anchor's log2 frequency in PITCH_STEP octaves, so
    that a hit gives its transposition (query pitch - reference pitch).

That is 6 bytes per posting plus a fixed 64 MiB directory (under the 7 bytes
of format 2 from about 170 h of catalogue on). A live stream probes tens of
thousands of keys per chunk, each a read at a random place in RAM, so the
layout counts cache misses: one directory entry and one record (a key has
two or three postings in a 100 h catalogue, 12-18 bytes, usually one cache
line). Format 2 (2**20 buckets, then a binary search of a low-byte array,
then ``frames``, ``spans`` and ``pitches`` as separate arrays) read five
places per key, and its lookups took about six times as long against the
100 h benchmark index (docs/benchmarks-daemon.md). An index is built
growable (``IndexBuilder``), then frozen; frozen indexes merge, drop tracks,
and save to a directory of ``.npy`` files plus ``meta.json`` (no pickle).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from fingerprint.hashes import hash_landmarks
from fingerprint.landmarks import Landmarks
from fingerprint.params import DT3_SCALE, FASTMATH, FRAME_RATE, HASH_BITS, PARAMS_VERSION, PITCH_BASE, PITCH_STEP

FORMAT = "castwatch-index"
FORMAT_VERSION = 3  # 3: a directory entry per key, packed records (2: 2**20 buckets and a low byte; 1: 2**16)
SORT_BITS = 8  # digit of the first radix-sort pass
RECORD = np.dtype([("frame", "<u4"), ("span", "u1"), ("pitch", "u1")])  # packed: 6 bytes


class IndexFormatError(Exception):
    """An index on disk is missing, damaged or was built with other parameters."""


@dataclass(frozen=True)
class Index:
    """A frozen inverted index; see the module docstring for the layout."""

    directory: np.ndarray
    records: np.ndarray
    track_ids: tuple[str, ...]
    starts: np.ndarray  # int64[n_tracks + 1]: global frame where each track starts; last = total

    @property
    def frames(self) -> np.ndarray:
        """The records' global anchor frames (a strided view)."""
        return self.records["frame"]

    @property
    def spans(self) -> np.ndarray:
        return self.records["span"]

    @property
    def pitches(self) -> np.ndarray:
        return self.records["pitch"]

    @property
    def n_tracks(self) -> int:
        return len(self.track_ids)

    @property
    def n_postings(self) -> int:
        return int(self.records.shape[0])

    @property
    def total_frames(self) -> int:
        return int(self.starts[-1])

    @property
    def seconds(self) -> float:
        """Reference audio covered by the index, in seconds."""
        return self.total_frames / FRAME_RATE

    @property
    def nbytes(self) -> int:
        """RAM taken by the arrays (what matters for capacity planning)."""
        return int(self.directory.nbytes + self.records.nbytes + self.starts.nbytes)

    def track_of(self, global_frame: int) -> int:
        """Track number holding a global frame."""
        return int(np.searchsorted(self.starts, global_frame, side="right") - 1)

    def track_number(self, track_id: str) -> int:
        try:
            return self.track_ids.index(track_id)
        except ValueError as e:
            raise KeyError(f"track {track_id!r} is not in the index") from e

    def without(self, track_ids: "set[str] | list[str]") -> "Index":
        """A new index without the given tracks (unknown ids are ignored)."""
        drop = {self.track_ids.index(t) for t in track_ids if t in self.track_ids}
        if not drop:
            return self
        keep = [i for i in range(self.n_tracks) if i not in drop]
        lengths = np.diff(self.starts)
        shift = np.zeros(self.n_tracks, np.int64)
        new_starts = np.zeros(len(keep) + 1, np.int64)
        for n, i in enumerate(keep):
            new_starts[n + 1] = new_starts[n] + lengths[i]
            shift[i] = self.starts[i] - new_starts[n]
        track = np.searchsorted(self.starts, self.frames, side="right") - 1
        mask = ~np.isin(track, np.fromiter(drop, np.int64))
        keys = _full_keys(self.directory)[mask]
        frames = (self.frames[mask].astype(np.int64) - shift[track[mask]]).astype(np.uint32)
        return _freeze(
            keys, frames, self.spans[mask], self.pitches[mask], tuple(self.track_ids[i] for i in keep), new_starts
        )


def _full_keys(directory: np.ndarray) -> np.ndarray:
    """The key of each record, in record order."""
    counts = np.diff(directory.astype(np.int64))
    return np.repeat(np.arange(counts.shape[0], dtype=np.uint32), counts)


def _freeze(
    keys: np.ndarray,
    frames: np.ndarray,
    spans: np.ndarray,
    pitches: np.ndarray,
    track_ids: tuple[str, ...],
    starts: np.ndarray,
) -> Index:
    """Sort postings by (key, frame) and build the directory."""
    if len(set(track_ids)) != len(track_ids):
        raise ValueError("duplicate track ids in index")
    if starts[-1] >= 2**32:
        raise ValueError("index exceeds 2**32 frames (about 4 years of audio); split the catalogue")
    keys = np.ascontiguousarray(keys, np.uint32)
    frames = np.ascontiguousarray(frames, np.uint32)
    if frames.shape[0] > 1 and not bool(np.all(frames[1:] >= frames[:-1])):
        by_frame = frame_order(frames)
        keys, frames = keys[by_frame], frames[by_frame]
        spans, pitches = np.asarray(spans)[by_frame], np.asarray(pitches)[by_frame]
    order, directory = key_order(keys)
    records = np.empty(order.shape[0], RECORD)
    records["frame"] = frames[order]
    records["span"] = np.asarray(spans, np.uint8)[order]
    records["pitch"] = np.asarray(pitches, np.uint8)[order]
    return Index(directory=directory, records=records, track_ids=track_ids, starts=np.asarray(starts, np.int64))


@numba.njit(nogil=True, cache=True)
def _digit_pass(values: np.ndarray, order: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """One stable counting-sort pass of ``order`` by the digit ``(values >> shift) & (2**bits - 1)``."""
    n = order.shape[0]
    mask = (1 << bits) - 1
    count = np.zeros((1 << bits) + 1, np.int64)
    for j in range(n):
        count[((values[order[j]] >> shift) & mask) + 1] += 1
    for b in range(1 << bits):
        count[b + 1] += count[b]
    out = np.empty(n, np.int64)
    for j in range(n):
        i = order[j]
        b = (values[i] >> shift) & mask
        out[count[b]] = i
        count[b] += 1
    return out


def _check_u32(name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype != np.uint32 or values.ndim != 1:
        raise TypeError(f"{name} must be a 1-D uint32 array, found {values.dtype} {values.shape}")
    return np.ascontiguousarray(values)


def key_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable order of ``keys`` (uint32 < 2**HASH_BITS) and the directory, in O(n + 2**HASH_BITS).

    A two-pass LSD radix sort (low byte, then the other 16 bits): stable, so
    postings that arrive in frame order come out sorted by (key, frame). It
    lets a snapshot of millions of postings freeze in a fraction of the time
    of a comparison sort.
    """
    keys = _check_u32("keys", keys)
    if keys.shape[0] and int(keys.max()) >= 2**HASH_BITS:
        raise ValueError(f"keys must be below 2**{HASH_BITS}; found {int(keys.max())}")
    order = _digit_pass(keys, np.arange(keys.shape[0], dtype=np.int64), 0, SORT_BITS)
    order = _digit_pass(keys, order, SORT_BITS, HASH_BITS - SORT_BITS)
    return order, _directory(keys[order], 2**HASH_BITS)


@numba.njit(nogil=True, cache=True)
def _directory(sorted_keys: np.ndarray, n_keys: int) -> np.ndarray:
    """directory[k] = number of keys below k, for k in 0..n_keys (one pass, no temporary arrays)."""
    if sorted_keys.shape[0] >= 2**32:
        raise ValueError("an index holds fewer than 2**32 postings")
    directory = np.empty(n_keys + 1, np.uint32)
    j = 0
    for k in range(n_keys + 1):
        while j < sorted_keys.shape[0] and sorted_keys[j] < k:
            j += 1
        directory[k] = j
    return directory


def frame_order(frames: np.ndarray) -> np.ndarray:
    """Stable order of uint32 ``frames`` in O(n): two 16-bit radix passes."""
    frames = _check_u32("frames", frames)
    order = _digit_pass(frames, np.arange(frames.shape[0], dtype=np.int64), 0, 16)
    return _digit_pass(frames, order, 16, 16)


def quantise_spans(dt3: np.ndarray) -> np.ndarray:
    """Triplet spans in 1/DT3_SCALE frames as uint8 (spans beyond the byte saturate)."""
    return np.clip(np.rint(np.asarray(dt3) * DT3_SCALE), 0, 255).astype(np.uint8)


def quantise_pitches(lf1: np.ndarray) -> np.ndarray:
    """Anchor log2 frequencies in PITCH_STEP octaves above PITCH_BASE, as uint8."""
    return np.clip(np.rint((np.asarray(lf1) - PITCH_BASE) / PITCH_STEP), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Postings:
    """One track's postings, hashed and quantised: what the index stores of it.

    Sorted by frame. This is the storable form of a track's fingerprint (the
    rights database keeps exactly these arrays), independent of where the
    track lands on an index's global frame axis.
    """

    keys: np.ndarray  # uint32 < 2**HASH_BITS
    frames: np.ndarray  # uint32, track-local anchor frames, ascending
    spans: np.ndarray  # uint8
    pitches: np.ndarray  # uint8
    n_frames: int  # length of the track in analysis frames

    def __post_init__(self) -> None:
        n = self.keys.shape[0]
        for name, dtype in (("keys", np.uint32), ("frames", np.uint32), ("spans", np.uint8), ("pitches", np.uint8)):
            array = getattr(self, name)
            if array.dtype != dtype or array.ndim != 1 or array.shape[0] != n:
                raise ValueError(f"postings.{name}: expected 1-D {np.dtype(dtype)} of length {n}, found {array.dtype} {array.shape}")
        if self.n_frames <= 0:
            raise ValueError(f"a track has at least one frame; found n_frames={self.n_frames}")
        if n and (int(self.frames[-1]) >= self.n_frames or not bool(np.all(self.frames[1:] >= self.frames[:-1]))):
            raise ValueError(f"postings.frames must ascend and stay below the track's {self.n_frames} frames")
        if n and int(self.keys.max()) >= 2**HASH_BITS:
            raise ValueError(f"postings.keys must be below 2**{HASH_BITS}")

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @classmethod
    def of(cls, landmarks: Landmarks, n_frames: int) -> "Postings":
        """Hash and quantise a track's landmarks."""
        if len(landmarks) and int(landmarks.t.max()) >= n_frames:
            raise ValueError(f"landmark beyond the track's {n_frames} frames")
        order = np.argsort(landmarks.t, kind="stable")
        return cls(
            keys=hash_landmarks(landmarks)[order],
            frames=np.asarray(landmarks.t, np.uint32)[order],
            spans=quantise_spans(landmarks.dt3)[order],
            pitches=quantise_pitches(landmarks.lf1)[order],
            n_frames=int(n_frames),
        )


class IndexBuilder:
    """Growable index: add tracks' landmarks, then ``freeze``."""

    def __init__(self, base: Index | None = None) -> None:
        self._keys: list[np.ndarray] = []
        self._frames: list[np.ndarray] = []
        self._spans: list[np.ndarray] = []
        self._pitches: list[np.ndarray] = []
        self._ids: list[str] = []
        self._lengths: list[int] = []
        if base is not None:
            self._keys.append(_full_keys(base.directory))
            self._frames.append(np.asarray(base.frames))
            self._spans.append(np.asarray(base.spans))
            self._pitches.append(np.asarray(base.pitches))
            self._ids.extend(base.track_ids)
            self._lengths.extend(np.diff(base.starts).tolist())
        self._total = int(sum(self._lengths))

    def __contains__(self, track_id: str) -> bool:
        return track_id in self._ids

    @property
    def n_tracks(self) -> int:
        return len(self._ids)

    def add(self, track_id: str, landmarks: Landmarks, n_frames: int) -> None:
        """Add one reference track of ``n_frames`` analysis frames."""
        self.add_postings(track_id, Postings.of(landmarks, n_frames))

    def add_postings(self, track_id: str, postings: Postings) -> None:
        """Add one reference track already hashed (as stored in the rights database)."""
        if track_id in self._ids:
            raise ValueError(f"track {track_id!r} is already in the index")
        self._keys.append(postings.keys)
        self._frames.append((postings.frames.astype(np.int64) + self._total).astype(np.uint32))
        self._spans.append(postings.spans)
        self._pitches.append(postings.pitches)
        self._ids.append(track_id)
        self._lengths.append(postings.n_frames)
        self._total += postings.n_frames

    def freeze(self) -> Index:
        keys = np.concatenate(self._keys) if self._keys else np.empty(0, np.uint32)
        frames = np.concatenate(self._frames) if self._frames else np.empty(0, np.uint32)
        spans = np.concatenate(self._spans) if self._spans else np.empty(0, np.uint8)
        pitches = np.concatenate(self._pitches) if self._pitches else np.empty(0, np.uint8)
        starts = np.concatenate(([0], np.cumsum(self._lengths, dtype=np.int64)))
        return _freeze(keys, frames, spans, pitches, tuple(self._ids), starts)


def merge(first: Index, second: Index) -> Index:
    """One index holding the tracks of both (track ids must be distinct)."""
    overlap = set(first.track_ids) & set(second.track_ids)
    if overlap:
        raise ValueError(f"track ids in both indexes: {sorted(overlap)[:5]}")
    keys = np.concatenate((_full_keys(first.directory), _full_keys(second.directory)))
    frames = np.concatenate(
        (np.asarray(first.frames), (second.frames.astype(np.int64) + first.total_frames).astype(np.uint32))
    )
    spans = np.concatenate((np.asarray(first.spans), np.asarray(second.spans)))
    pitches = np.concatenate((np.asarray(first.pitches), np.asarray(second.pitches)))
    starts = np.concatenate((first.starts, second.starts[1:] + first.total_frames))
    return _freeze(keys, frames, spans, pitches, first.track_ids + second.track_ids, starts)


def postings(index: Index, key: int) -> np.ndarray:
    """Global anchor frames stored under ``key`` (for tests and inspection)."""
    return np.asarray(index.frames[int(index.directory[key]) : int(index.directory[key + 1])])


def save(index: Index, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to the directory ``path`` atomically (replacing an older one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.save(tmp / "directory.npy", index.directory)
        np.save(tmp / "records.npy", index.records)
        np.save(tmp / "starts.npy", index.starts)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params_version": PARAMS_VERSION,
            "hash_bits": HASH_BITS,
            "track_ids": list(index.track_ids),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        old = None
        if path.exists():
            if not (path / "meta.json").exists():
                raise IndexFormatError(f"{path} exists and is not a castwatch index; refusing to overwrite it")
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        try:
            tmp.rename(path)
        except BaseException:
            if old is not None:
                old.rename(path)  # put the previous index back before reporting the failure
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(path: str | os.PathLike[str], mmap: bool = True) -> Index:
    """Read an index written by ``save``; arrays are memory-mapped unless ``mmap=False``."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise IndexFormatError(f"{path} is not a castwatch index (no meta.json); build one with `index`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{meta_path} is unreadable: {e}") from e
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{meta_path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: unsupported index format {meta.get('format')!r} v{meta.get('format_version')}"
            f" (this castwatch reads {FORMAT} v{FORMAT_VERSION}): rebuild it with `index`"
        )
    if meta.get("params_version") != PARAMS_VERSION or meta.get("hash_bits") != HASH_BITS:
        raise IndexFormatError(
            f"{path} was built with fingerprint parameters v{meta.get('params_version')},"
            f" this castwatch uses v{PARAMS_VERSION}: rebuild the index"
        )
    mode = "r" if mmap else None
    try:
        arrays = {
            name: np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
            for name in ("directory", "records", "starts")
        }
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path}: damaged index file: {e}") from e
    track_ids = meta.get("track_ids")
    if not isinstance(track_ids, list) or not all(isinstance(t, str) for t in track_ids):
        raise IndexFormatError(f"{meta_path}: expected track_ids to be a list of strings")
    track_ids = tuple(track_ids)
    expected = {
        "directory": (np.dtype(np.uint32), 2**HASH_BITS + 1),
        "records": (RECORD, None),
        "starts": (np.dtype(np.int64), len(track_ids) + 1),
    }
    for name, (dtype, length) in expected.items():
        array = arrays[name]
        if array.dtype != dtype or array.ndim != 1 or (length is not None and array.shape[0] != length):
            raise IndexFormatError(
                f"{path}/{name}.npy: expected 1-D {dtype}"
                f"{'' if length is None else f' of length {length}'}, found {array.dtype} {array.shape}"
            )
    if int(arrays["directory"][-1]) != arrays["records"].shape[0]:
        raise IndexFormatError(f"{path}: the directory and the records disagree in length; the index is damaged")
    return Index(
        directory=arrays["directory"], records=arrays["records"], track_ids=track_ids, starts=np.asarray(arrays["starts"])
    )

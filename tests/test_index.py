"""fingerprint.index: the flat inverted index against a brute-force model, and its on-disk format."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprint import index as index_mod
from fingerprint.hashes import hash_landmarks
from fingerprint.index import RECORD, Index, IndexBuilder, IndexFormatError, Postings, frame_order, key_order, load, merge, postings, save
from fingerprint.landmarks import Landmarks, extract
from fingerprint.params import HASH_BITS, N_FFT, PARAMS_VERSION, SAMPLE_RATE
from fingerprint.spectrum import n_frames_for
from fingerprint.synth import music

# Distinct lengths, so that a wrong track offset shows.
TRACK_SECONDS = {"t1": 12.0, "t2": 15.5, "t3": 9.0, "t4": 17.25}
ARRAYS = ("directory", "records", "starts")  # the files of a saved index
FIELDS = ("directory", "frames", "spans", "pitches", "starts")  # what an index holds, compared column by column
POSTING_ARRAYS = ("directory", "records")


class Track:
    def __init__(self, track_id: str, seed: int, seconds: float) -> None:
        samples = music(seconds, seed)
        self.id = track_id
        self.landmarks: Landmarks = extract(samples)
        self.n_frames = n_frames_for(samples.shape[0])


@pytest.fixture(scope="module")
def tracks() -> dict[str, Track]:
    return {tid: Track(tid, seed, sec) for seed, (tid, sec) in enumerate(TRACK_SECONDS.items(), start=1)}


def build(tracks: dict[str, Track], ids: list[str]) -> Index:
    builder = IndexBuilder()
    for tid in ids:
        builder.add(tid, tracks[tid].landmarks, tracks[tid].n_frames)
    return builder.freeze()


@pytest.fixture(scope="module")
def full(tracks: dict[str, Track]) -> Index:
    return build(tracks, list(TRACK_SECONDS))


def assert_same_index(a: Index, b: Index) -> None:
    assert a.track_ids == b.track_ids
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def brute_force(tracks: dict[str, Track], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(key, global frame) of every posting, straight from the landmarks."""
    keys, frames, start = [], [], 0
    for tid in ids:
        t = tracks[tid]
        keys.append(hash_landmarks(t.landmarks).astype(np.int64))
        frames.append(t.landmarks.t.astype(np.int64) + start)
        start += t.n_frames
    return np.concatenate(keys), np.concatenate(frames)


# --- layout ------------------------------------------------------------------------------------------


def test_frozen_layout(tracks: dict[str, Track], full: Index) -> None:
    n = sum(len(t.landmarks) for t in tracks.values())
    assert n > 1000  # enough postings for the checks below to mean something
    assert full.n_postings == n
    assert full.n_tracks == 4
    assert full.track_ids == tuple(TRACK_SECONDS)
    assert full.directory.dtype == np.uint32 and full.directory.shape == (2**HASH_BITS + 1,)
    assert full.records.dtype == RECORD and RECORD.itemsize == 6
    assert full.frames.dtype == np.uint32 and full.spans.dtype == np.uint8 and full.pitches.dtype == np.uint8
    assert full.starts.dtype == np.int64
    assert full.directory[0] == 0 and full.directory[-1] == n
    assert np.all(np.diff(full.directory.astype(np.int64)) >= 0)
    lengths = [tracks[t].n_frames for t in TRACK_SECONDS]
    np.testing.assert_array_equal(full.starts, np.concatenate(([0], np.cumsum(lengths))))
    assert full.total_frames == sum(lengths)
    # Frames are counted whole, so each track loses at most one analysis window at its end.
    audio_seconds = sum(TRACK_SECONDS.values())
    assert audio_seconds - 4 * N_FFT / SAMPLE_RATE <= full.seconds <= audio_seconds


def test_spans_are_quantised_triplet_spans(tracks: dict[str, Track], full: Index) -> None:
    expected = np.sort(np.concatenate([index_mod.quantise_spans(t.landmarks.dt3) for t in tracks.values()]))
    np.testing.assert_array_equal(np.sort(full.spans), expected)
    assert index_mod.quantise_spans(np.array([0.0, 1000.0, -3.0])).tolist() == [0, 255, 0]


def test_postings_equal_brute_force(tracks: dict[str, Track], full: Index) -> None:
    keys, frames = brute_force(tracks, list(TRACK_SECONDS))
    distinct = np.unique(keys)
    assert distinct.shape[0] > 500
    for key in distinct:
        expected = np.sort(frames[keys == key])
        got = postings(full, int(key))
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, expected, err_msg=f"key {key:#x}")
    total = sum(postings(full, int(k)).shape[0] for k in distinct)
    assert total == full.n_postings  # nothing stored under a key the landmarks do not have


def test_postings_of_absent_keys_are_empty(tracks: dict[str, Track], full: Index) -> None:
    keys, _ = brute_force(tracks, list(TRACK_SECONDS))
    present = set(keys.tolist())
    rng = np.random.default_rng(0)
    candidates = [0, 1, 255, 256, 2**24 - 1, 2**24 - 256, *rng.integers(0, 2**24, 2000).tolist()]
    # Neighbours of present keys: same bucket, adjacent low byte.
    candidates += [k ^ 1 for k in list(present)[:500]]
    absent = [k for k in candidates if k not in present]
    assert len(absent) > 1000
    for key in absent:
        assert postings(full, key).shape == (0,), f"key {key:#x}"


def test_empty_index() -> None:
    empty = IndexBuilder().freeze()
    assert empty.n_tracks == 0 and empty.n_postings == 0 and empty.total_frames == 0
    assert postings(empty, 12345).shape == (0,)


# --- building --------------------------------------------------------------------------------------


def test_track_order_does_not_change_postings_per_key(tracks: dict[str, Track]) -> None:
    forward = build(tracks, ["t1", "t2"])
    backward = build(tracks, ["t2", "t1"])
    assert backward.track_ids == ("t2", "t1")
    shift = tracks["t2"].n_frames
    keys, _ = brute_force(tracks, ["t1"])
    for key in np.unique(keys)[:200]:
        f = postings(forward, int(key))
        b = postings(backward, int(key))
        in_t1_forward = f[f < tracks["t1"].n_frames]
        in_t1_backward = b[b >= shift] - shift
        np.testing.assert_array_equal(in_t1_forward, in_t1_backward)


def test_duplicate_track_id_raises(tracks: dict[str, Track]) -> None:
    builder = IndexBuilder()
    t = tracks["t1"]
    builder.add("same", t.landmarks, t.n_frames)
    with pytest.raises(ValueError, match="already in the index"):
        builder.add("same", tracks["t2"].landmarks, tracks["t2"].n_frames)
    assert builder.n_tracks == 1
    assert builder.freeze().n_postings == len(t.landmarks)  # the refused track left nothing behind


def test_duplicate_against_base_index_raises(full: Index, tracks: dict[str, Track]) -> None:
    builder = IndexBuilder(full)
    assert "t3" in builder and "t9" not in builder
    with pytest.raises(ValueError, match="already in the index"):
        builder.add("t3", tracks["t3"].landmarks, tracks["t3"].n_frames)


def test_landmark_beyond_track_length_raises(tracks: dict[str, Track]) -> None:
    t = tracks["t1"]
    with pytest.raises(ValueError, match="beyond"):
        IndexBuilder().add("short", t.landmarks, int(t.landmarks.t.max()))


def test_extending_a_base_equals_building_at_once(tracks: dict[str, Track], full: Index) -> None:
    builder = IndexBuilder(build(tracks, ["t1", "t2"]))
    for tid in ("t3", "t4"):
        builder.add(tid, tracks[tid].landmarks, tracks[tid].n_frames)
    assert_same_index(builder.freeze(), full)


@pytest.mark.parametrize("n, key_range", [(0, 10), (1, 10), (1000, 7), (5000, 2**HASH_BITS), (20000, 300)])
def test_key_order_equals_numpy_stable_argsort(n: int, key_range: int) -> None:
    keys = np.random.default_rng(n).integers(0, key_range, n).astype(np.uint32)
    order, directory = key_order(keys)
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    expected = np.searchsorted(keys[order], np.arange(2**HASH_BITS + 1), side="left")
    np.testing.assert_array_equal(directory, expected)
    assert directory.dtype == np.uint32


@pytest.mark.parametrize("n, frame_range", [(0, 10), (1, 10), (3000, 5), (20000, 2**32)])
def test_frame_order_equals_numpy_stable_argsort(n: int, frame_range: int) -> None:
    frames = np.random.default_rng(n).integers(0, frame_range, n, dtype=np.uint64).astype(np.uint32)
    np.testing.assert_array_equal(frame_order(frames), np.argsort(frames, kind="stable"))


def test_key_order_rejects_wrong_input() -> None:
    with pytest.raises(TypeError, match="uint32"):
        frame_order(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="uint32"):
        key_order(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="below"):
        key_order(np.array([2**HASH_BITS], np.uint32))


def test_postings_round_trip_equals_adding_landmarks(tracks: dict[str, Track], full: Index) -> None:
    builder = IndexBuilder()
    for tid, track in tracks.items():
        stored = Postings.of(track.landmarks, track.n_frames)
        copy = Postings(*(np.frombuffer(getattr(stored, f).tobytes(), getattr(stored, f).dtype)
                          for f in ("keys", "frames", "spans", "pitches")), n_frames=stored.n_frames)
        builder.add_postings(tid, copy)
    assert_same_index(builder.freeze(), full)


def test_postings_validation(tracks: dict[str, Track]) -> None:
    good = Postings.of(tracks["t1"].landmarks, tracks["t1"].n_frames)
    assert len(good) == len(tracks["t1"].landmarks)
    assert np.all(np.diff(good.frames.astype(np.int64)) >= 0)
    with pytest.raises(ValueError, match="keys"):
        Postings(good.keys.astype(np.int64), good.frames, good.spans, good.pitches, good.n_frames)
    with pytest.raises(ValueError, match="spans"):
        Postings(good.keys, good.frames, good.spans[:-1], good.pitches, good.n_frames)
    with pytest.raises(ValueError, match="ascend"):
        Postings(good.keys, good.frames[::-1].copy(), good.spans, good.pitches, good.n_frames)
    with pytest.raises(ValueError, match="ascend"):
        Postings(good.keys, good.frames, good.spans, good.pitches, int(good.frames[-1]))
    with pytest.raises(ValueError, match="at least one frame"):
        Postings(good.keys[:0], good.frames[:0], good.spans[:0], good.pitches[:0], 0)


def test_track_of(tracks: dict[str, Track], full: Index) -> None:
    for i in range(full.n_tracks):
        assert full.track_of(int(full.starts[i])) == i
        assert full.track_of(int(full.starts[i + 1]) - 1) == i
    owners = np.repeat(np.arange(4), [len(tracks[t].landmarks) for t in TRACK_SECONDS])
    _, frames = brute_force(tracks, list(TRACK_SECONDS))
    for frame, owner in zip(frames[::7], owners[::7], strict=True):
        assert full.track_of(int(frame)) == owner
    assert full.track_number("t3") == 2
    with pytest.raises(KeyError, match="t9"):
        full.track_number("t9")


def test_nbytes_is_six_bytes_per_posting_plus_fixed_directory(full: Index) -> None:
    fixed = full.directory.nbytes + full.starts.nbytes
    assert full.directory.nbytes == (2**HASH_BITS + 1) * 4  # independent of the catalogue
    assert full.records.nbytes == 6 * full.n_postings
    assert full.nbytes == full.records.nbytes + fixed  # and it counts every array


# --- merge and drop --------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 3])
def test_merge_equals_building_at_once(tracks: dict[str, Track], full: Index, split: int) -> None:
    ids = list(TRACK_SECONDS)
    merged = merge(build(tracks, ids[:split]), build(tracks, ids[split:]))
    assert_same_index(merged, full)


def test_merge_with_empty(tracks: dict[str, Track], full: Index) -> None:
    empty = IndexBuilder().freeze()
    assert_same_index(merge(empty, full), full)
    assert_same_index(merge(full, empty), full)


def test_merge_refuses_shared_track_ids(tracks: dict[str, Track]) -> None:
    with pytest.raises(ValueError, match="t2"):
        merge(build(tracks, ["t1", "t2"]), build(tracks, ["t2", "t3"]))


@pytest.mark.parametrize("drop", [["t2"], ["t1"], ["t4"], ["t1", "t3"], ["t2", "t3", "t4"]])
def test_without_equals_building_without(tracks: dict[str, Track], full: Index, drop: list[str]) -> None:
    kept = [t for t in TRACK_SECONDS if t not in drop]
    assert_same_index(full.without(drop), build(tracks, kept))


def test_without_everything_and_unknown_ids(full: Index) -> None:
    assert full.without(["nope"]) is full
    emptied = full.without(set(full.track_ids))
    assert emptied.n_tracks == 0 and emptied.n_postings == 0 and emptied.total_frames == 0


def test_without_then_merge_back_restores(tracks: dict[str, Track], full: Index) -> None:
    restored = merge(full.without(["t4"]), build(tracks, ["t4"]))
    assert_same_index(restored, full)


# --- save and load ---------------------------------------------------------------------------------


def test_save_load_round_trip_memory_mapped(full: Index, tmp_path: Path) -> None:
    save(full, tmp_path / "idx")
    loaded = load(tmp_path / "idx")
    assert_same_index(loaded, full)
    for name in POSTING_ARRAYS:
        assert isinstance(getattr(loaded, name), np.memmap), name
    assert loaded.nbytes == full.nbytes
    key = int(index_mod._full_keys(full.directory)[full.n_postings // 2])
    np.testing.assert_array_equal(postings(loaded, key), postings(full, key))


def test_load_without_mmap_reads_into_memory(full: Index, tmp_path: Path) -> None:
    save(full, tmp_path / "idx")
    loaded = load(str(tmp_path / "idx"), mmap=False)
    assert_same_index(loaded, full)
    for name in POSTING_ARRAYS:
        assert not isinstance(getattr(loaded, name), np.memmap), name


def test_empty_index_round_trip(tmp_path: Path) -> None:
    save(IndexBuilder().freeze(), tmp_path / "empty")
    loaded = load(tmp_path / "empty")
    assert loaded.n_tracks == 0 and loaded.n_postings == 0


def test_loaded_index_can_be_extended_and_saved_over_itself(
    tracks: dict[str, Track], full: Index, tmp_path: Path
) -> None:
    path = tmp_path / "idx"
    save(build(tracks, ["t1", "t2", "t3"]), path)
    builder = IndexBuilder(load(path))  # memory-mapped base, then replaced on disk
    builder.add("t4", tracks["t4"].landmarks, tracks["t4"].n_frames)
    save(builder.freeze(), path)
    assert_same_index(load(path), full)


def test_save_over_existing_index_replaces_it_without_leftovers(
    tracks: dict[str, Track], full: Index, tmp_path: Path
) -> None:
    parent = tmp_path / "indexes"
    path = parent / "idx"
    save(build(tracks, ["t1"]), path)
    save(full, path)
    assert_same_index(load(path), full)
    assert sorted(p.name for p in parent.iterdir()) == ["idx"]  # no temp or .old directories remain
    assert sorted(p.name for p in path.iterdir()) == sorted([*(f"{a}.npy" for a in ARRAYS), "meta.json"])


def test_save_refuses_to_overwrite_a_non_index_directory(full: Index, tmp_path: Path) -> None:
    path = tmp_path / "music"
    path.mkdir()
    (path / "precious.wav").write_bytes(b"do not delete")
    with pytest.raises(IndexFormatError, match="not a castwatch index") as info:
        save(full, path)
    assert str(path) in str(info.value)
    assert [p.name for p in path.iterdir()] == ["precious.wav"]
    assert (path / "precious.wav").read_bytes() == b"do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["music"]  # the temp directory was removed


def test_save_refuses_to_overwrite_a_file(full: Index, tmp_path: Path) -> None:
    path = tmp_path / "idx"
    path.write_text("not an index")
    with pytest.raises(IndexFormatError):
        save(full, path)
    assert path.read_text() == "not an index"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_save_creates_missing_parents(full: Index, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "idx"
    save(full, path)
    assert load(path).n_postings == full.n_postings


def test_meta_json_records_parameters(full: Index, tmp_path: Path) -> None:
    save(full, tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["format"] == index_mod.FORMAT
    assert meta["params_version"] == PARAMS_VERSION
    assert meta["track_ids"] == list(full.track_ids)
    assert not list((tmp_path / "idx").glob("*.pkl"))


# --- load errors -----------------------------------------------------------------------------------


@pytest.fixture
def saved(full: Index, tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    save(full, path)
    return path


def load_error(path: Path, mmap: bool = True) -> str:
    with pytest.raises(IndexFormatError) as info:
        load(path, mmap=mmap)
    message = str(info.value)
    assert str(path) in message
    return message


def rewrite_meta(path: Path, **changes: object) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def test_load_missing_directory(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nowhere")
    assert "not a castwatch index" in message


def test_load_directory_without_meta(saved: Path) -> None:
    (saved / "meta.json").unlink()
    assert "no meta.json" in load_error(saved)


def test_load_unparsable_meta(saved: Path) -> None:
    (saved / "meta.json").write_text("{not json")
    assert "unreadable" in load_error(saved)


def test_load_other_params_version(saved: Path) -> None:
    rewrite_meta(saved, params_version=PARAMS_VERSION + 1)
    message = load_error(saved)
    assert f"v{PARAMS_VERSION + 1}" in message and f"v{PARAMS_VERSION}" in message
    assert "rebuild" in message


def test_load_other_hash_bits(saved: Path) -> None:
    rewrite_meta(saved, hash_bits=index_mod.HASH_BITS + 2)
    assert "rebuild" in load_error(saved)


def test_load_other_format(saved: Path) -> None:
    rewrite_meta(saved, format_version=index_mod.FORMAT_VERSION + 1)
    assert "unsupported index format" in load_error(saved)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("keep", [0.5, 40], ids=["half", "header"])
def test_load_truncated_records(saved: Path, mmap: bool, keep: float) -> None:
    records = saved / "records.npy"
    data = records.read_bytes()
    records.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    assert "damaged" in load_error(saved, mmap=mmap)


def test_load_missing_array_file(saved: Path) -> None:
    (saved / "records.npy").unlink()
    assert "damaged" in load_error(saved)


def test_load_directory_disagreeing_with_records(saved: Path, full: Index) -> None:
    np.save(saved / "records.npy", np.asarray(full.records)[:-3])
    assert "disagree" in load_error(saved)


def test_load_starts_not_matching_track_count(saved: Path, full: Index) -> None:
    np.save(saved / "starts.npy", np.asarray(full.starts)[:-1])
    message = load_error(saved)
    assert "starts.npy" in message and f"length {full.n_tracks + 1}" in message


def test_load_wrong_dtype(saved: Path, full: Index) -> None:
    np.save(saved / "directory.npy", np.asarray(full.directory).astype(np.int64))
    message = load_error(saved)
    assert "directory.npy" in message and "uint32" in message and "int64" in message


def test_load_records_of_another_layout(saved: Path, full: Index) -> None:
    aligned = np.dtype([("frame", "<u4"), ("span", "u1"), ("pitch", "u1")], align=True)  # 8 bytes, not 6
    np.save(saved / "records.npy", np.asarray(full.records).astype(aligned))
    message = load_error(saved)
    assert "records.npy" in message and "damaged" not in message


def test_load_refuses_pickled_arrays(saved: Path) -> None:
    np.save(saved / "records.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    assert "damaged" in load_error(saved)


@pytest.mark.parametrize("meta", ["[1, 2]", "null", "missing_track_ids"])
def test_load_malformed_meta_is_a_format_error(saved: Path, meta: str) -> None:
    if meta == "missing_track_ids":
        content = json.loads((saved / "meta.json").read_text())
        del content["track_ids"]
        meta = json.dumps(content)
    (saved / "meta.json").write_text(meta)
    load_error(saved)


def test_failed_replacement_keeps_the_old_index(
    tracks: dict[str, Track], full: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "idx"
    old = build(tracks, ["t1"])
    save(old, path)

    def failing(real: Callable[..., None]) -> Callable[..., None]:
        """``real`` (os.rename or os.replace), except that moving the new index into place fails."""

        def move(src: str | os.PathLike[str], dst: str | os.PathLike[str], *args: Any, **kwargs: Any) -> None:
            name = os.path.basename(os.fspath(src))
            if name.startswith(".idx.") and not name.endswith(".old"):
                raise OSError("simulated failure (disk error, signal) while moving the new index in")
            real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(os, "rename", failing(os.rename))
    monkeypatch.setattr(os, "replace", failing(os.replace))
    with pytest.raises(OSError, match="simulated"):
        save(full, path)
    monkeypatch.undo()
    assert_same_index(load(path), old)

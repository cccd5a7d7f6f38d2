"""fingerprint.matcher end to end: a catalogue of synthesised recordings, queries cut and degraded in numpy.

Ground truth comes from how each query was made: the track, and the reference
time at query time q, ``start + speed * q``. The synthesised music repeats its
bars, so a reported position is also accepted where the reference audio is
nearly identical to the true position's (normalised correlation of the
samples); a separate check requires most positions to be the true ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import pytest
from scipy import signal

from fingerprint import matcher as matcher_mod
from fingerprint import params
from fingerprint.index import Index, IndexBuilder
from fingerprint.landmarks import LIVE, QUERY, Landmarks, extract
from fingerprint.matcher import MAX_KEY_POSTINGS, Hits, Match, Matcher, plausible_distortion
from fingerprint.spectrum import n_frames_for
from fingerprint.synth import music

SR = params.SAMPLE_RATE
TRACK_SECONDS = 45.0
TRACK_IDS = [f"catalogue/track-{n:02d}.wav" for n in range(12)]
SEEDS = dict(zip(TRACK_IDS, range(1000, 1012)))
OTHER_SEEDS = range(2000, 2006)  # never in the catalogue
LOOP_SIMILARITY = 0.8  # correlation of the samples above which two positions of a track sound the same
CONTRACT_KEYS = {"track", "score", "query_start", "query_end", "ref_start", "ref_end", "speed"}  # DESIGN.md


@pytest.fixture(scope="module")
def references() -> dict[str, np.ndarray]:
    return {track: music(TRACK_SECONDS, seed) for track, seed in SEEDS.items()}


@pytest.fixture(scope="module")
def index(references: dict[str, np.ndarray]) -> Index:
    builder = IndexBuilder()
    for track, samples in references.items():
        builder.add(track, extract(samples), n_frames_for(samples.shape[0]))
    return builder.freeze()


@pytest.fixture(scope="module")
def matcher(index: Index) -> Matcher:
    return Matcher(index)


# --- making queries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    track: str
    start: float  # reference seconds at query time 0
    speed: float  # reference seconds per query second
    samples: np.ndarray


def cut(reference: np.ndarray, start: float, seconds: float, speed: float = 1.0) -> np.ndarray:
    """``seconds`` of query audio from ``start``, played ``speed`` times fast (pitch and tempo, like a turntable)."""
    segment = reference[int(round(start * SR)) : int(round((start + seconds * speed) * SR))].astype(np.float64)
    if speed == 1.0:
        return segment
    ratio = Fraction(speed).limit_denominator(100)
    assert abs(float(ratio) - speed) < 1e-9
    return signal.resample_poly(segment, ratio.denominator, ratio.numerator)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(n)
    if colour == "pink":  # 1/f power
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1]
        noise = np.fft.irfft(np.fft.rfft(noise) / np.sqrt(freqs), n)
    return noise / np.sqrt(np.mean(noise**2))


def with_noise(samples: np.ndarray, colour: str, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = coloured_noise(samples.shape[0], colour, rng)
    return samples + noise * math.sqrt(np.mean(samples**2) / 10 ** (snr_db / 10))


def telephone(samples: np.ndarray) -> np.ndarray:
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, samples)


def as_query(samples: np.ndarray) -> np.ndarray:
    return (samples / max(1.0, float(np.abs(samples).max()))).astype(np.float32)


def make_queries(
    references: dict[str, np.ndarray], seconds: float, speed: float = 1.0, degrade: str = "clean", salt: int = 0
) -> list[Query]:
    queries = []
    for n, track in enumerate(TRACK_IDS):
        rng = np.random.default_rng([n, int(seconds * 10), int(speed * 1000), salt])
        start = float(rng.uniform(0.0, TRACK_SECONDS - seconds * speed - 0.5))
        samples = cut(references[track], start, seconds, speed)
        if degrade in ("white", "pink"):
            samples = with_noise(samples, degrade, 5.0, rng)
        elif degrade == "telephone":
            samples = telephone(samples)
        queries.append(Query(track, start, speed, as_query(samples)))
    return queries


# --- checking answers ---------------------------------------------------------------------------------


def sounds_the_same(reference: np.ndarray, truth: float, reported: float, span: float, tolerance: float) -> bool:
    """Whether the reference near ``reported`` (within ``tolerance`` s) repeats the audio at ``truth``."""
    segment = reference[int(truth * SR) : int((truth + max(span, 2.0)) * SR)].astype(np.float64)
    lo = max(0, int((reported - tolerance) * SR))
    window = reference[lo : int((reported + tolerance) * SR) + segment.shape[0]].astype(np.float64)
    if window.shape[0] < segment.shape[0] or segment.shape[0] < SR:
        return False
    products = signal.correlate(window, segment, mode="valid", method="fft")
    running = np.concatenate(([0.0], np.cumsum(window**2)))
    energies = running[segment.shape[0] :] - running[: -segment.shape[0]]  # of each window slice
    similarity = products / np.sqrt(np.maximum(energies, 1e-12)) / np.linalg.norm(segment)
    return float(similarity.max()) >= LOOP_SIMILARITY


@dataclass
class Verdict:
    found: bool  # the right track ranked first, speed right, position right or a repeat of it
    exact: bool  # ... and the position within tolerance of the truth itself
    detail: str


def judge(
    query: Query, matches: list[Match], references: dict[str, np.ndarray], speed_tol: float, position_tol: float
) -> Verdict:
    if not matches or matches[0].track != query.track:
        return Verdict(False, False, f"{query}: got {[(m.track, m.count) for m in matches]}")
    best = matches[0]
    truth = query.start + query.speed * best.query_start
    detail = f"{query.track} from {query.start:.2f} s at x{query.speed}: got {best}"
    if abs(best.speed - query.speed) > speed_tol * query.speed:
        return Verdict(False, False, detail + " (speed)")
    if abs(best.ref_start - truth) <= position_tol:
        return Verdict(True, True, detail)
    span = query.speed * (best.query_end - best.query_start)
    same = sounds_the_same(references[query.track], truth, best.ref_start, span, position_tol)
    return Verdict(same, False, detail + (" (a repeat of the true position)" if same else " (position)"))


def run(
    matcher: Matcher, queries: list[Query], references: dict[str, np.ndarray], speed_tol: float, position_tol: float
) -> list[Verdict]:
    return [
        judge(q, matcher.match(extract(q.samples, QUERY)), references, speed_tol, position_tol) for q in queries
    ]


def assert_all_found(verdicts: list[Verdict], min_exact: float = 0.75) -> None:
    missed = [v.detail for v in verdicts if not v.found]
    assert not missed, "\n".join(missed)
    exact = sum(v.exact for v in verdicts)
    assert exact >= min_exact * len(verdicts), f"only {exact}/{len(verdicts)} positions at the truth itself"


# --- recall and accuracy ------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [5.0, 10.0])
def test_clean_excerpts(seconds: float, matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    verdicts = run(matcher, make_queries(references, seconds), references, speed_tol=0.01, position_tol=0.5)
    assert_all_found(verdicts, min_exact=0.8)


@pytest.mark.parametrize("colour", ["white", "pink"])
def test_noisy_excerpts_at_5_db_snr(colour: str, matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    """Ten seconds are enough for every track; five for most."""
    long = run(matcher, make_queries(references, 10.0, degrade=colour), references, 0.01, 0.5)
    # Noise masks the melody first; where the accompaniment repeats, the
    # position can land on the repeat: the track must always be right, the
    # position for all but one in ten.
    wrong_track = [v.detail for v in long if not v.found and not v.detail.endswith("(position)")]
    assert not wrong_track, "\n".join(wrong_track)
    assert sum(v.found for v in long) >= 0.9 * len(long), "\n".join(v.detail for v in long if not v.found)
    assert sum(v.exact for v in long) >= 0.6 * len(long)
    short = run(matcher, make_queries(references, 5.0, degrade=colour), references, 0.01, 0.5)
    found = sum(v.found for v in short)
    assert found >= 0.75 * len(short), "\n".join(v.detail for v in short if not v.found)


@pytest.mark.parametrize("speed", [0.95, 1.05, 1.10])
def test_speed_changed_excerpts(speed: float, matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    queries = make_queries(references, 10.0, speed) + make_queries(references, 5.0, speed)
    assert_all_found(run(matcher, queries, references, speed_tol=0.015, position_tol=1.5), min_exact=0.8)


def test_band_limited_excerpts(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    queries = make_queries(references, 10.0, degrade="telephone") + make_queries(references, 5.0, degrade="telephone")
    assert_all_found(run(matcher, queries, references, 0.01, 0.5), min_exact=0.8)


def test_judge_rejects_wrong_positions(references: dict[str, np.ndarray], matcher: Matcher) -> None:
    """The loop allowance is not a blank cheque: shifted answers are refused."""
    query = make_queries(references, 10.0)[3]
    best = matcher.match(extract(query.samples, QUERY))[0]
    assert judge(query, [best], references, 0.01, 0.5).found
    refused = 0
    for shift in (-7.3, -2.1, 1.3, 3.7, 9.1):
        moved = Match(**{**best.__dict__, "ref_start": best.ref_start + shift})
        refused += not judge(query, [moved], references, 0.01, 0.5).found
    assert refused >= 4
    assert not judge(query, [Match(**{**best.__dict__, "speed": 1.03})], references, 0.01, 0.5).found


# --- nothing where there is nothing -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["white_noise", "pink_noise", "silence", "quiet_hiss"])
def test_non_music_matches_nothing(kind: str, matcher: Matcher) -> None:
    rng = np.random.default_rng(77)
    n = 10 * SR
    samples = {
        "white_noise": 0.3 * rng.standard_normal(n),
        "pink_noise": 0.2 * coloured_noise(n, "pink", rng),
        "silence": np.zeros(n),
        "quiet_hiss": 1e-4 * rng.standard_normal(n),
    }[kind]
    assert matcher.match(extract(as_query(samples), QUERY)) == []




@pytest.mark.parametrize("seconds", [5.0, 10.0])
def test_music_not_in_the_catalogue_matches_nothing(seconds: float, matcher: Matcher) -> None:
    false = {}
    for seed in OTHER_SEEDS:
        found = matcher.match(extract(music(seconds, seed), QUERY))
        if found:
            false[seed] = [(m.track, m.count, round(m.score, 3), round(m.speed, 3)) for m in found]
    assert not false, f"false matches: {false}"


# --- the API around match -----------------------------------------------------------------------------


def test_lookup_then_vote_equals_match(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    queries = [
        make_queries(references, 10.0)[0].samples,
        make_queries(references, 10.0, degrade="pink")[5].samples,
        make_queries(references, 10.0, speed=1.05)[7].samples,
        music(8.0, OTHER_SEEDS[0]),
    ]
    matched = 0
    for samples in queries:
        found = extract(samples, QUERY)
        for max_matches in (1, 5):
            want = matcher.match(found, max_matches)
            assert matcher.vote(matcher.lookup(found), found.t, max_matches) == want
            matched += bool(want)
    assert matched >= 6
    assert matcher.match(Landmarks.empty()) == []


def test_lookup_serials(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    """Hits name their query landmark by serial; a stream looks up in parts with running serials."""
    found = extract(make_queries(references, 10.0)[2].samples, QUERY)
    hits = matcher.lookup(found)
    assert len(hits) > len(found) // 4 and np.unique(hits.serial).shape[0] > len(found) // 10
    assert hits.serial.min() >= 0 and hits.serial.max() < len(found)
    np.testing.assert_array_equal(hits.t, found.t[hits.serial])
    shifted = matcher.lookup(found, first_serial=12345)
    np.testing.assert_array_equal(shifted.serial, hits.serial + 12345)
    for a, b in zip(shifted[1:], hits[1:]):
        np.testing.assert_array_equal(a, b)
    half = len(found) // 2
    parts = [matcher.lookup(found.take(slice(0, half))), matcher.lookup(found.take(slice(half, None)), half)]
    joined = type(hits).concat(parts)

    def in_order(h: object) -> np.ndarray:  # hits are a set: order them by (serial, frame)
        return np.lexsort((h.frame, h.serial))  # type: ignore[attr-defined]

    for a, b in zip(joined.take(in_order(joined)), hits.take(in_order(hits))):
        np.testing.assert_array_equal(a, b)


def test_common_key_stop_list(index: Index) -> None:
    matcher = Matcher(index)
    assert matcher.max_postings >= MAX_KEY_POSTINGS
    assert matcher.max_postings >= matcher_mod.COMMON_KEY_FACTOR * index.n_postings / 2**params.HASH_BITS - 1


@pytest.mark.parametrize("extra", [0, 1])
def test_keys_beyond_the_stop_list_give_no_hits(extra: int, references: dict[str, np.ndarray]) -> None:
    """A key held by max_postings postings is looked up; one more and it is skipped."""
    one = extract(references[TRACK_IDS[0]]).take(slice(0, 1))
    builder = IndexBuilder()
    builder.add("small", one, 1 + int(one.t[0]))
    probe_index = builder.freeze()
    own_keys = len(Matcher(probe_index).lookup(one))
    assert own_keys >= 1  # the landmark finds itself
    limit = Matcher(probe_index).max_postings
    copies = limit + extra
    builder = IndexBuilder()
    builder.add("repeated", Landmarks.concat([one] * copies), 1 + int(one.t[0]))
    hits = Matcher(builder.freeze()).lookup(one)
    assert len(hits) == (0 if extra else copies * own_keys)


# --- distortions and the JSON contract ----------------------------------------------------------------


def test_plausible_distortion_accepts_broadcast_shapes() -> None:
    tol = params.DISTORTION_TOL_OCT
    for kind, top, shape in (
        ("speed change", params.MAX_SPEED_OCT, lambda x: (x, x)),
        ("time-stretch", params.MAX_STRETCH_OCT, lambda x: (0.0, x)),
        ("pitch shift", params.MAX_PITCH_SHIFT_OCT, lambda x: (x, 0.0)),
    ):
        for x in np.linspace(-top, top, 13):
            pitch, tempo = shape(float(x))
            assert plausible_distortion(pitch, tempo), f"{kind} {2**x:.3f}"
    for x in np.linspace(-params.MAX_SPEED_OCT, params.MAX_SPEED_OCT, 13):
        inner = float(x + 0.9 * tol * (-1 if x > 0 else 1))  # near the speed-change line, towards the middle
        assert plausible_distortion(inner, float(x)) and plausible_distortion(float(x), inner)
    for factor in (0.95, 1.02, 1.05, 1.10):  # what the benchmark's broadcasts do
        assert plausible_distortion(math.log2(factor), math.log2(factor))
    assert plausible_distortion(0.0, math.log2(1.05))  # tempo-only x1.05
    assert plausible_distortion(math.log2(1.03), 0.0)  # pitch-only +3 %


def test_plausible_distortion_rejects_musical_coincidences() -> None:
    tol = params.DISTORTION_TOL_OCT
    assert not plausible_distortion(5 / 12, 0.0)  # transposed by a fourth
    assert not plausible_distortion(-2 / 12, 0.0)  # by a whole tone
    assert not plausible_distortion(1 / 12 + 0.005, 0.0)  # by a semitone
    assert not plausible_distortion(0.07, -0.09)  # up in pitch, down in tempo
    assert not plausible_distortion(1.5 * tol, -1.5 * tol)
    assert not plausible_distortion(2.5 * tol, 1.2 * tol)
    assert not plausible_distortion(0.0, params.MAX_STRETCH_OCT + 0.01)  # a tempo ratio beyond time compression
    for beyond in (params.MAX_SPEED_OCT + 0.01, -(params.MAX_SPEED_OCT + 0.01)):
        assert not plausible_distortion(beyond, beyond)
        assert not plausible_distortion(0.0, beyond)
        assert not plausible_distortion(beyond, 0.0)


def test_match_json_has_the_contract_keys(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    query = make_queries(references, 10.0)[1]
    best = matcher.match(extract(query.samples, QUERY))[0]
    line = best.as_json()
    assert CONTRACT_KEYS <= set(line)
    assert json.loads(json.dumps(line)) == line
    assert isinstance(line["track"], str) and line["track"] == query.track
    for key in CONTRACT_KEYS - {"track"}:
        assert isinstance(line[key], float), key
    assert 0.0 < line["score"] <= 1.0
    assert 0.0 <= line["query_start"] < line["query_end"] <= 10.0
    assert line["ref_end"] - line["ref_start"] == pytest.approx(
        line["speed"] * (line["query_end"] - line["query_start"]), abs=0.01
    )
    assert line["ref_start"] == pytest.approx(best.ref_start, abs=5e-4)


# --- long queries: windows and occurrences -----------------------------------------------------------------


def test_long_query_reports_every_occurrence_once(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    """A recorded broadcast: A, something else, B played 3 % fast, A again. Each play once, in order."""
    a, b = TRACK_IDS[1], TRACK_IDS[6]
    rng = np.random.default_rng(5)
    parts = [
        cut(references[a], 5.0, 20.0),  # query 0-20 s = A from 5 s
        music(15.0, OTHER_SEEDS[1]).astype(np.float64),  # 20-35 s: not in the catalogue
        cut(references[b], 8.0, 25.0, 1.03),  # 35-60 s = B from 8 s at x1.03
        cut(references[a], 30.0, 10.0),  # 60-70 s = A from 30 s
        0.05 * rng.standard_normal(10 * SR),  # 70-80 s: noise
    ]
    found = matcher.match(extract(as_query(np.concatenate(parts)), QUERY))
    assert [m.track for m in found] == [a, b, a], found
    expected = [(0.0, 20.0, 5.0, 1.0), (35.0, 60.0, 8.0, 1.03), (60.0, 70.0, 30.0, 1.0)]
    for m, (q0, q1, ref0, speed) in zip(found, expected):
        assert abs(m.query_start - q0) < 1.0 and abs(m.query_end - q1) < 1.5, m
        assert abs(m.ref_start - (ref0 + speed * (m.query_start - q0))) < 0.5, m
        assert abs(m.speed - speed) < 0.01 * speed, m
        assert m.count >= matcher.min_aligned and 0 < m.score <= 1


def test_long_non_catalogue_query_matches_nothing(matcher: Matcher) -> None:
    """Windows keep the evidence per decision constant: a minute of other music is not matched."""
    other = np.concatenate([music(20.0, seed) for seed in OTHER_SEEDS[:3]])
    assert matcher.match(extract(other, QUERY)) == []


def test_a_play_placed_one_loop_away_within_its_occurrence_is_dropped() -> None:
    """A window holding the end of a play may align one loop away (a repeated bass line): same play, not a second one."""

    def window(q0: float, q1: float, ref0: float, count: int) -> tuple[Match, np.ndarray]:
        anchors = np.arange(round(q0 * params.FRAME_RATE), round(q1 * params.FRAME_RATE), 3)
        return Match("a", 0.5, count, q0, q1, ref0, ref0 + q1 - q0, 1.0), anchors[:count]

    anchors = np.arange(0, round(40 * params.FRAME_RATE))
    plays = matcher_mod.merge_occurrences(
        [window(0.0, 10.0, 30.0, 60), window(5.0, 10.0, 14.0, 30), window(20.0, 30.0, 2.0, 60)], anchors
    )
    assert [(m.query_start, m.ref_start) for m in plays] == [(0.0, 30.0), (20.0, 2.0)]


def test_verify_confirms_the_true_alignment_and_refuses_others(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    """``verify`` asks about one given alignment: the true one is confirmed with vote's figures, a shifted one is not."""
    track = TRACK_IDS[3]
    query = extract(as_query(cut(references[track], 12.0, 10.0, speed=1.02)), QUERY)
    hits = matcher.lookup(query)
    (best,) = matcher.vote(hits, query.t, 1)
    assert best.track == track
    ref_at_first_anchor = best.ref_start - best.speed * (best.query_start - query.t.min() / params.FRAME_RATE)
    confirmed = matcher.verify(hits, query.t, track, ref_at_first_anchor, best.speed)
    assert confirmed is not None and confirmed.track == track
    assert confirmed.ref_start == pytest.approx(best.ref_start, abs=0.1) and confirmed.count >= best.count - 2
    assert matcher.verify(hits, query.t, track, ref_at_first_anchor + 7.0, best.speed) is None
    assert matcher.verify(hits, query.t, TRACK_IDS[4], ref_at_first_anchor, best.speed) is None
    assert matcher.verify(hits, query.t, "not in the index", ref_at_first_anchor, best.speed) is None


def test_hits_of_keeps_one_recording_and_track_seconds_is_its_length(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    track = TRACK_IDS[3]
    hits = matcher.lookup(extract(as_query(cut(references[track], 12.0, 10.0)), QUERY))
    own = matcher.hits_of(hits, track)
    numbers = np.searchsorted(matcher.index.starts, hits.frame, side="right") - 1
    assert len(own) == int(np.sum(numbers == TRACK_IDS.index(track))) > 0
    assert np.all(np.searchsorted(matcher.index.starts, own.frame, side="right") - 1 == TRACK_IDS.index(track))
    assert len(matcher.hits_of(hits, "not in the index")) == 0
    frames = n_frames_for(references[track].shape[0])
    assert matcher.track_seconds(track) == pytest.approx(frames / params.FRAME_RATE)
    with pytest.raises(KeyError):
        matcher.track_seconds("not in the index")


def test_onset_moves_a_late_match_back_to_where_its_recording_began(matcher: Matcher, references: dict[str, np.ndarray]) -> None:
    """A match found on the last seconds of a play is extended back along its line, over every key, to the play's first seconds."""
    track = TRACK_IDS[5]
    before = as_query(music(6.0, OTHER_SEEDS[0]))
    played = as_query(cut(references[track], 10.0, 14.0, speed=1.02))

    def late_match(samples: np.ndarray) -> tuple[Landmarks, Match]:
        query = extract(np.concatenate([before, samples]), LIVE)
        hits = matcher.lookup(query)
        late = round(15.0 * params.FRAME_RATE)
        (found,) = matcher.vote(hits.take(hits.t >= late), query.t[query.t >= late], 1)
        assert found.track == track and found.query_start >= 14.9
        return query, found

    query, found = late_match(played)
    moved = matcher.onset(query, found)
    assert moved.query_start == pytest.approx(6.0, abs=0.5)
    assert moved.ref_start == pytest.approx(10.0 + 1.02 * (moved.query_start - 6.0), abs=0.2)
    assert (moved.track, moved.query_end, moved.ref_end, moved.count) == (found.track, found.query_end, found.ref_end, found.count)
    assert moved.speed == pytest.approx(1.02, abs=0.002)  # refitted on the longer span
    hypothesis = matcher.onset(query, replace(found, speed=1.0))  # a match on a few seconds can carry the vote's speed step
    assert hypothesis.query_start == pytest.approx(6.0, abs=0.5) and hypothesis.speed == pytest.approx(1.02, abs=0.002)

    gapped = played.copy()
    gapped[round(4.0 * SR) : round(8.0 * SR)] = 0.0  # a dropout longer than ONSET_MAX_GAP_S: the play is heard from after it
    query, found = late_match(gapped)
    assert matcher.onset(query, found).query_start == pytest.approx(14.0, abs=0.7)
    assert matcher.onset(query, found, max_gap_s=6.0).query_start == pytest.approx(6.0, abs=0.5)

    query, found = late_match(played)
    elsewhere = replace(found, ref_start=found.ref_start + 7.0)  # a line the audio does not follow
    assert matcher.onset(query, elsewhere) == elsewhere
    assert matcher.onset(query, replace(found, track="not in the index")).query_start == found.query_start


# --- confirmation on common keys ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mostly_common(references: dict[str, np.ndarray]) -> tuple[Matcher, str]:
    """An index where a track keeps one landmark in sixteen on rare keys, as a large catalogue leaves it.

    The others are copied into MAX_KEY_POSTINGS decoy recordings, so
    that their keys are common and the vote no longer sees them. Each copy
    is shifted in time by its own amount: no decoy lines up with the track.
    """
    track = TRACK_IDS[2]
    own = extract(references[track])
    n_frames = n_frames_for(references[track].shape[0])
    copied = own.take(np.arange(len(own)) % 16 != 0)
    builder = IndexBuilder()
    builder.add(track, own, n_frames)
    for k in range(MAX_KEY_POSTINGS):
        builder.add(f"decoy-{k}", Landmarks(**{**copied._asdict(), "t": (copied.t + 97 * (k + 1)) % n_frames}), n_frames)
    matcher = Matcher(builder.freeze())
    assert matcher.max_postings == MAX_KEY_POSTINGS
    return matcher, track


def test_lookup_within_finds_the_common_keys_of_one_recording(
    mostly_common: tuple[Matcher, str], references: dict[str, np.ndarray]
) -> None:
    matcher, track = mostly_common
    query = extract(as_query(cut(references[track], 20.0, 5.0)), LIVE)
    rare, common = matcher.lookup(query), matcher.lookup_within(query, track)
    assert len(common) > 3 * len(rare) > 0
    position = matcher.index.track_number(track)
    lo, hi = matcher.index.starts[position], matcher.index.starts[position + 1]
    assert np.all((common.frame >= lo) & (common.frame < hi))
    assert len(matcher.lookup_within(query, "decoy-3")) > 0
    assert np.array_equal(common.t, query.t[common.serial])
    with pytest.raises(KeyError):
        matcher.lookup_within(query, "not in the index")


@pytest.fixture(scope="module")
def short_of_rare(
    mostly_common: tuple[Matcher, str], references: dict[str, np.ndarray]
) -> tuple[Matcher, str, Landmarks, Hits]:
    """Five seconds of that track from 20 s, played 2 % fast, as a live stream extracts them, and their hits."""
    matcher, track = mostly_common
    query = extract(as_query(cut(references[track], 20.0, 5.0, speed=1.02)), LIVE)
    return matcher, track, query, matcher.lookup(query)


def test_a_play_short_of_rare_keys_is_confirmed_on_its_common_keys(
    short_of_rare: tuple[Matcher, str, Landmarks, Hits],
) -> None:
    """Five seconds of the track hold too few rare anchors for the vote; its common keys, looked up in the track alone, confirm it."""
    matcher, track, query, hits = short_of_rare
    assert matcher.vote(hits, query.t) == []
    (found,) = matcher.vote(hits, query.t, landmarks=query)
    assert found.track == track
    assert found.count >= matcher_mod.CONFIRM_MIN_ALIGNED
    assert found.speed == pytest.approx(1.02, abs=0.01)
    assert found.ref_start == pytest.approx(20.0 + 1.02 * found.query_start - 1.02 * query.t.min() / params.FRAME_RATE, abs=0.2)


def test_a_candidate_is_confirmed_from_as_few_rare_anchors_as_the_setting_says(
    short_of_rare: tuple[Matcher, str, Landmarks, Hits], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate with exactly CONFIRM_MIN_RARE aligned anchors on rare keys is confirmed; one anchor short of it, it is not."""
    matcher, track, query, hits = short_of_rare
    ref_s = 20.0 + 1.02 * query.t.min() / params.FRAME_RATE
    rare = Matcher(matcher.index, min_aligned=1).verify(hits, query.t, track, ref_s, 1.02)
    assert rare is not None and matcher_mod.CONFIRM_MIN_RARE <= rare.count < matcher.min_aligned
    monkeypatch.setattr(matcher_mod, "CONFIRM_MIN_RARE", rare.count)
    assert [m.track for m in matcher.vote(hits, query.t, landmarks=query)] == [track]
    monkeypatch.setattr(matcher_mod, "CONFIRM_MIN_RARE", rare.count + 1)
    assert matcher.vote(hits, query.t, landmarks=query) == []


def test_verify_confirms_an_expected_alignment_on_common_keys(short_of_rare: tuple[Matcher, str, Landmarks, Hits]) -> None:
    """A play's own timeline is weighed as the vote weighs a rival: short of rare keys, confirmed on common ones."""
    matcher, track, query, hits = short_of_rare
    ref_s = 20.0 + 1.02 * query.t.min() / params.FRAME_RATE  # the recording time at the first anchor
    assert matcher.verify(hits, query.t, track, ref_s, 1.02) is None
    found = matcher.verify(hits, query.t, track, ref_s, 1.02, landmarks=query)
    assert found is not None and found.track == track
    assert found.count >= matcher_mod.CONFIRM_MIN_ALIGNED
    assert found.ref_start == pytest.approx(20.0 + 1.02 * found.query_start - 1.02 * query.t.min() / params.FRAME_RATE, abs=0.2)
    assert matcher.verify(hits, query.t, track, ref_s + 7.0, 1.02, landmarks=query) is None  # another alignment


def test_confirmation_finds_nothing_in_music_not_in_the_catalogue(mostly_common: tuple[Matcher, str]) -> None:
    matcher, _ = mostly_common
    for seed in OTHER_SEEDS:
        query = extract(as_query(music(5.0, seed)), LIVE)
        assert matcher.vote(matcher.lookup(query), query.t, landmarks=query) == []

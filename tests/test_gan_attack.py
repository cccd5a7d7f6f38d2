"""Adversarial search, the robustness suite, the trainer and the GAN commands (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fingerprint.gan import generate, shipped
from fingerprint.gan.attack import Attack, Bounds, equalise
from fingerprint.gan.robustness import ATTACKS, Outcome, build_index, markdown, recall
from fingerprint.gan.train import load_corpus, train
from fingerprint.params import SAMPLE_RATE
from fingerprint.synth import music
from monitor import cli


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return generate(20.0, seed=4242)


def test_search_keeps_the_best_candidate_and_reports_every_trial(reference: np.ndarray) -> None:
    index = build_index([("ref", reference)])
    attack = Attack(shipped(), index, "ref", reference[: 8 * SAMPLE_RATE], budget_db=0.0, seed=3)
    clean = attack.evidence(reference[: 8 * SAMPLE_RATE])
    result = attack.run(evaluations=12)
    evidences = [t.evidence for t in result.trials]
    assert 1 <= len(evidences) <= 12 and result.evidence == min(evidences)
    assert result.evidence < clean  # an overlay at 0 dB always costs the matcher evidence
    assert result.adversarial.shape == result.overlay.shape == (8 * SAMPLE_RATE,)
    overlay_power = np.mean(result.overlay.astype(np.float64) ** 2)
    mixed_overlay_power = np.mean((result.adversarial - reference[: 8 * SAMPLE_RATE]).astype(np.float64) ** 2)
    signal_power = np.mean(reference[: 8 * SAMPLE_RATE].astype(np.float64) ** 2)
    assert overlay_power > 0 and 10 * np.log10(signal_power / mixed_overlay_power) == pytest.approx(0.0, abs=0.01)
    record = result.record()
    assert record["evaluations"] == len(result.trials) and record["best"]["evidence"] == result.evidence
    # Same seed, same search.
    again = Attack(shipped(), index, "ref", reference[: 8 * SAMPLE_RATE], budget_db=0.0, seed=3).run(evaluations=12)
    assert [t.evidence for t in again.trials] == evidences


def test_transforms_stay_within_their_bounds(reference: np.ndarray) -> None:
    index = build_index([("ref", reference)])
    bounds = Bounds(speed=0.03, pitch=0.0, eq_db=3.0)
    result = Attack(shipped(), index, "ref", reference[: 6 * SAMPLE_RATE], 10.0, bounds, seed=1).run(evaluations=12)
    assert all(abs(t.speed - 1) <= 0.03 + 1e-9 and t.pitch == 1.0 and max(map(abs, t.eq_db)) <= 3.0 for t in result.trials)
    assert any(t.speed != 1.0 for t in result.trials if t.phase == "local")
    with pytest.raises(ValueError, match="speed bound"):
        Bounds(speed=0.5)


def test_equalise_changes_the_named_bands_only() -> None:
    tone = lambda hz: np.sin(2 * np.pi * hz * np.arange(SAMPLE_RATE) / SAMPLE_RATE)  # noqa: E731
    x = (tone(150) + tone(3000)).astype(np.float32)
    y = equalise(x, (-6.0, 0.0, 0.0, 0.0))
    spectrum_x, spectrum_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    assert spectrum_y[150] / spectrum_x[150] == pytest.approx(10 ** (-6 / 20), rel=1e-3)
    assert spectrum_y[3000] / spectrum_x[3000] == pytest.approx(1.0, rel=1e-3)


def test_recall_and_table() -> None:
    outcomes = [
        Outcome("a", 10.0, ATTACKS[0], True, 40, 1),
        Outcome("b", 10.0, ATTACKS[0], False, 8, 1),
        Outcome("a", 10.0, ATTACKS[1], True, 30, 1),
        Outcome("b", 10.0, ATTACKS[1], True, 20, 1),
        Outcome("a", 10.0, ATTACKS[2], False, 3, 9),
        Outcome("b", 10.0, ATTACKS[2], False, 0, 4),
    ]
    assert recall(outcomes) == {ATTACKS[0]: {10.0: 0.5}, ATTACKS[1]: {10.0: 1.0}, ATTACKS[2]: {10.0: 0.0}}
    table = markdown(outcomes)
    assert "| recall of 2 references | 10 dB |" in table and "| white noise | 50 % |" in table
    assert "| white noise | 24 |" in table and "| adversarial overlay | 1.5 |" in table


def test_robustness_quick_writes_table_plot_and_outcomes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rob"
    assert cli.main(["robustness", "--quick", "--budgets", "10,0", "--out", str(out), "-q"]) == 0
    table = (out / "robustness.md").read_text()
    assert "Command: `castwatch robustness --quick --budgets 10,0 --seed 0`" in table and all(f"| {attack} |" in table for attack in ATTACKS)
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert len(outcomes) == 3 * 2 * len(ATTACKS)
    by_attack = {a: [o for o in outcomes if o["attack"] == a] for a in ATTACKS}
    assert all(o["evaluations"] >= 1 for o in by_attack[ATTACKS[2]])
    # The search is an attack: at equal power it leaves the matcher less evidence than white noise does.
    assert [(o["reference"], o["budget_db"]) for o in by_attack[ATTACKS[0]]] == [(o["reference"], o["budget_db"]) for o in by_attack[ATTACKS[2]]]
    assert sum(o["evidence"] for o in by_attack[ATTACKS[2]]) < 0.8 * sum(o["evidence"] for o in by_attack[ATTACKS[0]])
    assert "| white noise |" in capsys.readouterr().out


def test_robustness_skips_undecodable_references(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "refs"
    folder.mkdir()
    for seed in (1, 2):
        sf.write(folder / f"song-{seed}.wav", generate(12.0, seed), SAMPLE_RATE)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEnope")
    argv = ["robustness", "--corpus", str(folder), "--references", "3", "--evaluations", "2", "--budgets", "0", "--out", str(tmp_path / "r"), "-q"]
    assert cli.main(argv) == 0
    outcomes = [json.loads(line) for line in (tmp_path / "r" / "outcomes.jsonl").read_text().splitlines()]
    assert sorted({Path(o["reference"]).name for o in outcomes}) == ["song-1.wav", "song-2.wav"]
    err = capsys.readouterr().err
    assert "skipped:" in err and "broken.wav" in err


def test_attack_command_writes_audio_and_record(tmp_path: Path, reference: np.ndarray) -> None:
    path = tmp_path / "ref.wav"
    sf.write(path, reference, SAMPLE_RATE)
    out = tmp_path / "attack"
    code = cli.main(["attack", str(path), "--budget-db", "5", "--out", str(out), "--evaluations", "6", "--seconds", "6"])
    assert code == 0
    record = json.loads((out / "attack.json").read_text())
    assert record["budget_db"] == 5.0 and record["excerpt_start_s"] == pytest.approx(7.0)
    assert 1 <= record["evaluations"] <= 6 and len(record["trials"]) == record["evaluations"]
    assert record["evidence"] == min(t["evidence"] for t in record["trials"])
    assert sf.info(str(out / "adversarial.wav")).frames == 6 * SAMPLE_RATE


@pytest.mark.parametrize(
    "argv, message",
    [
        (["gan", "sample", "{tmp}/missing/x.wav", "--seconds", "2", "--seed", "1"], "does not exist; create it first"),
        (["gan", "sample", "{tmp}/x.wav", "--seconds", "0", "--seed", "1"], "--seconds must be positive"),
        (["gan", "sample", "{tmp}/x.wav", "--seconds", "1", "--seed", "1", "--weights", "{tmp}/no.npz"], "no such file"),
        (["attack", "{tmp}/ref.wav", "--budget-db", "5", "--out", "{tmp}/o", "--seconds", "60"], "the reference lasts 20.0 s"),
        (["attack", "{tmp}/ref.wav", "--budget-db", "5", "--out", "{tmp}/o", "--max-speed", "0.5"], "speed bound"),
        (["attack", "{tmp}/nothing.wav", "--budget-db", "5", "--out", "{tmp}/o"], "no such file"),
        (["robustness", "--budgets", "10,loud", "--out", "{tmp}/r"], "expected dB values"),
        (["gan", "train", "--corpus", "{tmp}/empty", "--out", "{tmp}/t"], "no audio files"),
        (["gan", "train", "--corpus", "{tmp}/empty", "--steps", "0"], "--steps must be at least 1, got 0"),
    ],
)
def test_user_mistakes_get_clear_errors(
    argv: list[str], message: str, tmp_path: Path, reference: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    sf.write(tmp_path / "ref.wav", reference, SAMPLE_RATE)
    (tmp_path / "empty").mkdir()
    assert cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_sample_command_is_deterministic(tmp_path: Path) -> None:
    for name in ("a.wav", "b.wav"):
        assert cli.main(["gan", "sample", str(tmp_path / name), "--seconds", "2.5", "--seed", "9"]) == 0
    a, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == SAMPLE_RATE and a.shape == (20000,)
    np.testing.assert_array_equal(a, sf.read(tmp_path / "b.wav", dtype="float32")[0])


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for seed in (1, 2):
        sf.write(folder / f"song-{seed}.wav", music(32.0, seed), SAMPLE_RATE)
    sf.write(folder / "jingle.wav", music(5.0, 3), SAMPLE_RATE)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEnope")
    return folder


def test_training_is_reproducible_and_logs_discriminator_accuracy(tiny_corpus: Path) -> None:
    corpus = load_corpus(sorted(tiny_corpus.glob("*.wav")), lambda message: None)
    assert corpus.n_tracks == 2  # the jingle is too short, the broken file is skipped
    first, history = train(corpus, steps=8, seed=5, log=lambda entry: None)
    second, _ = train(corpus, steps=8, seed=5, log=lambda entry: None)
    for a, b in zip(first.network.parameters, second.network.parameters):
        np.testing.assert_array_equal(a, b)
    other, _ = train(corpus, steps=8, seed=6, log=lambda entry: None)
    assert not np.array_equal(first.network.weights[0], other.network.weights[0])
    assert history[-1]["step"] == 8 and 0.0 <= history[-1]["d_accuracy"] <= 1.0


def test_train_command_writes_weights_sheet_history_and_statistics(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["gan", "train", "--corpus", str(tiny_corpus), "--out", str(out), "--steps", "4", "--stats-clips", "1"]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["tracks"] == 2
    assert set(summary["statistics"]) >= {"trained generator", "untrained generator", "white noise"}
    assert summary["statistics"]["white noise"]["flatness"] > summary["statistics"]["real music (reference clips)"]["flatness"]
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "history.jsonl").read_text().splitlines()) == 1
    rebuilt = cli.main(["gan", "sample", str(tmp_path / "x.wav"), "--seconds", "1", "--seed", "1", "--weights", str(out / "generator.npz")])
    assert rebuilt == 0

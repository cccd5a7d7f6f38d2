"""``castwatch demo``: the engine end to end on synthesised audio, in a few seconds.

Synthesises a small catalogue, indexes it with the offline CLI's code path,
then plays a degraded excerpt of one recording the way a radio would (3 %
fast, a presenter-level noise bed, a phone-line band limit) and identifies it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from fingerprint import IndexBuilder, Matcher, extract, save
from fingerprint.bench import degrade
from fingerprint.landmarks import QUERY
from fingerprint.params import SAMPLE_RATE
from fingerprint.spectrum import n_frames_for
from fingerprint.synth import music

CATALOGUE = 6
TRACK_SECONDS = 60.0


def run(workdir: Path | None = None, out=sys.stdout) -> int:
    """Build, degrade, identify; print what happens. Returns 0 when the excerpt is found."""
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="castwatch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"castwatch demo: working in {root}", file=out)
    builder = IndexBuilder()
    tracks = {}
    for seed in range(1, CATALOGUE + 1):
        path = root / f"recording-{seed}.wav"
        samples = music(TRACK_SECONDS, seed)
        sf.write(path, samples, SAMPLE_RATE)
        builder.add(str(path), extract(samples), n_frames_for(samples.shape[0]))
        tracks[str(path)] = samples
    index = builder.freeze()
    save(index, root / "index")
    print(
        f"  indexed {index.n_tracks} synthesised recordings ({index.seconds / 60:.0f} min of audio)"
        f" into {root / 'index'}: {index.n_postings} postings, {index.nbytes / 1e6:.2f} MB",
        file=out,
    )

    rng = np.random.default_rng(7)
    source = str(root / "recording-4.wav")
    start_s = 21.0
    excerpt = tracks[source][int(start_s * SAMPLE_RATE) : int((start_s + 12.5) * SAMPLE_RATE)]
    broadcast = degrade.speed(excerpt, 1.03)[: 12 * SAMPLE_RATE]
    broadcast = degrade.mix_at_snr(broadcast, degrade.pink_noise(broadcast.shape[0], rng), 5.0)
    broadcast = degrade.telephone(broadcast, SAMPLE_RATE)
    query = root / "broadcast-excerpt.wav"
    sf.write(query, broadcast / max(1e-9, float(np.abs(broadcast).max())) * 0.9, SAMPLE_RATE)
    print(
        f"  made {query.name}: 12 s of {Path(source).name} from {start_s:.0f} s, played 3 % fast,"
        " under pink noise at 5 dB SNR, through a telephone band",
        file=out,
    )

    started = time.perf_counter()
    samples, _ = sf.read(query, dtype="float32")
    matches = Matcher(index).match(extract(samples, QUERY))
    elapsed = (time.perf_counter() - started) * 1000
    print(f"  identified in {elapsed:.0f} ms:", file=out)
    print("  " + json.dumps({"query": str(query), "matches": [m.as_json() for m in matches]}), file=out)
    if matches and matches[0].track == source:
        m = matches[0]
        print(
            f"  -> {Path(m.track).name}: query {m.query_start:.1f}-{m.query_end:.1f} s is reference"
            f" {m.ref_start:.1f}-{m.ref_end:.1f} s, played at x{m.speed:.3f} (truth: from"
            f" {start_s + 1.03 * m.query_start:.1f} s at x1.030)",
            file=out,
        )
        print(
            f"  the same with the offline CLI:\n    python -m fingerprint match {root / 'index'} {query} --json",
            file=out,
        )
        return 0
    print("  -> the excerpt was NOT identified", file=out)
    return 1

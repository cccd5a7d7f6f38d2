"""castwatch's fingerprint engine: audio in, landmarks and matches out.

A pure library: no Kafka, no SQL, no global state; it never imports
``monitor``. The pieces, in the order data flows through them:

- ``audio.decode``: any file or URL to mono float32 at ``SAMPLE_RATE``;
- ``landmarks.Extractor`` / ``extract``: spectral-peak pair landmarks,
  streaming-exact;
- ``index.IndexBuilder`` / ``Index``: the inverted index in flat arrays;
- ``matcher.Matcher``: offset voting over speed hypotheses, giving ``Match``es.

Beside the path: ``synth`` and ``gan`` (a trained generator) make test audio,
and ``gan`` also attacks the matcher with adversarial overlays.
"""

from fingerprint.audio import AudioError, decode
from fingerprint.index import Index, IndexBuilder, IndexFormatError, Postings, load, merge, save
from fingerprint.landmarks import Extractor, Landmarks, extract
from fingerprint.matcher import Match, Matcher
from fingerprint.params import SAMPLE_RATE

__all__ = [
    "AudioError",
    "Extractor",
    "Index",
    "IndexBuilder",
    "IndexFormatError",
    "Landmarks",
    "Match",
    "Matcher",
    "Postings",
    "SAMPLE_RATE",
    "decode",
    "extract",
    "load",
    "merge",
    "save",
]

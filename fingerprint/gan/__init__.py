"""The embedded GAN: music-like test audio without downloads, and adversarial overlays for robustness tests.

``generate(seconds, seed)`` is the fast path the tests use: a few seconds of
8 kHz float32 audio in milliseconds from the weights shipped in the package.
"""

from fingerprint.gan.generator import Generator, GanError, generate, load, shipped

__all__ = ["Generator", "GanError", "generate", "load", "shipped"]

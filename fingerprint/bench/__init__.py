"""Benchmark data: real recorded audio from Debian packages and the degradations
that turn catalogue excerpts into realistic broadcast queries.

Kept apart from the engine so that `fingerprint` itself never downloads anything
and the tests stay offline.
"""

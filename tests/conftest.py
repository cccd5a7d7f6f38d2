"""Shared fixtures: a real PostgreSQL and a real Kafka broker for the tests that need them
(see tests/pg.py and tests/broker.py), recordings made by the GAN generator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import soundfile as sf

from fingerprint.gan import generate
from fingerprint.params import SAMPLE_RATE
from monitor.kafka.local import LocalBroker

from broker import session_broker
from pg import ScratchServer, session_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ScratchServer]:
    yield from session_server()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """The session's Kafka broker, started when the first test asks for it (later tests reuse it)."""
    yield from session_broker()


@pytest.fixture
def db_url(pg_server: ScratchServer) -> Iterator[str]:
    """URL of a fresh, migrated database for this test alone."""
    url = pg_server.fresh_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url) as connection:
        yield connection


def write_tracks(folder: Path, seeds: range, seconds: float = 30.0) -> list[Path]:
    """Generated recordings (fingerprint.gan) as 8 kHz WAV files, one per seed (distinct content)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"track-{seed:03d}.wav"
        if not path.exists():
            sf.write(path, generate(seconds, seed), SAMPLE_RATE)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six 30 s generated recordings (shared; do not modify)."""
    return write_tracks(tmp_path_factory.mktemp("recordings"), range(1, 7))

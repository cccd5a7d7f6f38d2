"""``castwatch demo``, the README's main job: local server, catalogue, licence, identify."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from monitor import demo
from monitor.rights.db import local_server
from monitor.rights.localdb import scratch_server
from monitor.settings import Settings


def test_demo_identifies_the_excerpt_and_its_licensing_and_reruns(tmp_path: Path) -> None:
    scratch = scratch_server(prefix="castwatch-demo-test-")
    settings = Settings(None, scratch.datadir, scratch.port, None, tmp_path / "cache")
    try:
        first = io.StringIO()
        assert demo.run(tmp_path / "one", settings, first, live=False) == 0
        text = first.getvalue()
        assert "6 recordings added, 0 already there" in text
        assert "Oskar & June - Paper Moons" in text and "Bluebird Publishing 50%, Northwind Records 50%" in text
        assert "NOT LICENSED: Demo FM Ltd holds no licence in force in GB from Bluebird Publishing" in text
        assert "speed x1.03" in text
        again = io.StringIO()
        assert demo.run(tmp_path / "two", settings, again, live=False) == 0
        assert "0 recordings added, 6 already there" in again.getvalue()
    finally:
        local_server(settings).stop()
        shutil.rmtree(scratch.datadir.parent, ignore_errors=True)


def test_demo_monitors_a_simulated_broadcast_live(tmp_path: Path, kafka_broker) -> None:
    scratch = scratch_server(prefix="castwatch-demo-test-")
    settings = Settings(None, scratch.datadir, scratch.port, None, tmp_path / "cache", broker_url=kafka_broker.url)
    try:
        out = io.StringIO()
        assert demo.run(tmp_path / "live", settings, out) == 0, out.getvalue()
        text = out.getvalue()
        assert "metrics on http://127.0.0.1:" in text
        assert "play.started" in text and "play.ended" in text and "INFRINGEMENT" in text
        assert "5 plays detected for 5 in the truth" in text
    finally:
        local_server(settings).stop()
        shutil.rmtree(scratch.datadir.parent, ignore_errors=True)

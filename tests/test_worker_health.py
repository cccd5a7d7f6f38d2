"""The worker's health pages and bind address, served by a real worker against the real broker and database."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import pytest

from monitor.kafka.topics import ensure_topics
from monitor.rights.localdb import free_port
from test_worker_e2e import start_worker, stop_worker


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_worker_binds_where_configured_and_reports_live_and_ready(
    kafka_broker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(ensure_topics(kafka_broker.url))
    monkeypatch.setenv("CASTWATCH_WEB_HOST", "127.0.0.2")  # another loopback address: proves the setting binds
    port = free_port()
    worker = start_worker(db_url, kafka_broker.url, f"test-health-{free_port()}", port)
    base = f"http://127.0.0.2:{port}"
    try:
        deadline = time.monotonic() + 90
        ready = (0, "")
        while not ready[1].startswith("ready: 4 partitions"):  # it first joins the group, then rebalances
            assert worker.poll() is None and time.monotonic() < deadline, f"never ready: {ready}"
            try:
                ready = get(f"{base}/readyz")
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        live = get(f"{base}/livez")
        metrics = get(f"{base}/metrics")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5)
    finally:
        output = stop_worker(worker)
    assert ready == (200, "ready: 4 partitions assigned\n"), output[-3000:]
    assert live[0] == 200 and live[1].startswith("alive:")
    assert metrics[0] == 200 and "castwatch_index_recordings" in metrics[1]

"""The dashboard in a real browser (Debian's headless chromium through Selenium and chromium-driver).

A worker monitors a simulated broadcast published in real time on the
session's broker; the page, loaded before the broadcast starts, must show
the stream live and the detection without reloading, and acknowledging the
infringement through the page must be recorded in the database with who
and when. The screenshot is kept as a test artefact: in the directory named
by ``CASTWATCH_TEST_ARTIFACTS`` if set, else ``build/test-artifacts/`` of the
working tree (ignored by git); the test prints where.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
import soundfile as sf
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fingerprint.params import SAMPLE_RATE
from fingerprint.synth import music
from monitor.ingest import ChunkPublisher
from monitor.kafka.topics import ensure_topics
from monitor.rights import catalog
from monitor.rights.catalog import Owner, TrackMeta
from monitor.rights.licences import Stream, add_stream
from monitor.rights.localdb import free_port
from monitor.simulate import compose, publish_streams
from logged import LoggedProcess
from test_dashboard import add_play, add_track
from test_worker_e2e import start_worker, stop_worker

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OPERATOR = "browser-test-operator"
BROADCAST_SEED = 3  # composes one unlicensed play of "Song 22" from the start of a 1 min broadcast


def start_dashboard(db_url: str, port: int) -> LoggedProcess:
    env = dict(os.environ, CASTWATCH_DATABASE_URL=db_url)
    env.pop("CASTWATCH_DASHBOARD_TOKEN", None)
    dashboard = LoggedProcess([sys.executable, "-m", "monitor", "dashboard", "--port", str(port), "--operator", OPERATOR], env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=5) as response:
                json.load(response)
            return dashboard
        except (urllib.error.URLError, ConnectionError):
            if dashboard.poll() is not None or time.monotonic() > deadline:
                dashboard.kill()
                dashboard.wait()
                raise AssertionError(f"the dashboard did not start: {dashboard.output()}")
            time.sleep(0.3)


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,768"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def broadcast_in_background(url: str, stream: str, files: list[Path]) -> threading.Thread:
    composition = compose(files, 1.0, BROADCAST_SEED)
    assert [(Path(p.recording).name, p.stream_start) for p in composition.truth] == [("rec-22.wav", 0.0)]

    async def publish() -> None:
        async with ChunkPublisher(url, "audio.chunks.v1") as publisher:
            await publish_streams({stream: composition.samples}, composition.rate, publisher, chunk_seconds=2.0,
                                  start_ns=time.time_ns(), fast=False, stop=asyncio.Event())  # fmt: skip

    thread = threading.Thread(target=asyncio.run, args=(publish(),), daemon=True)
    thread.start()
    return thread


def text_of(driver: webdriver.Chrome, css: str) -> str:
    try:
        return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
    except StaleElementReferenceException:  # redrawn under us: read again at the next poll
        return ""


@pytest.mark.slow
def test_dashboard_shows_a_live_detection_and_records_an_acknowledgement(
    kafka_broker, db_url: str, tmp_path: Path
) -> None:  # fmt: skip
    stream = f"fm-{uuid.uuid4().hex[:10]}"
    files = []
    with psycopg.connect(db_url) as conn:
        for seed in (21, 22):
            path = tmp_path / f"rec-{seed}.wav"
            sf.write(path, music(60.0, seed), SAMPLE_RATE)
            catalog.add(conn, [path], {}, TrackMeta(title=f"Song {seed}", owners=(Owner("Acme Music"),)))
            files.append(path)
        add_stream(conn, Stream(stream, "FM One", "FM One Ltd", "FR"))  # no licence: every play infringes
    artefacts = Path(os.environ.get("CASTWATCH_TEST_ARTIFACTS") or Path(__file__).parents[1] / "build" / "test-artifacts")
    artefacts.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(kafka_broker.url))
    port = free_port()
    worker = start_worker(db_url, kafka_broker.url, f"test-dashboard-{free_port()}")
    dashboard = start_dashboard(db_url, port)
    driver = browser()
    publisher: threading.Thread | None = None
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        row = f'#streams tr[data-key="{stream}"]'
        WebDriverWait(driver, 20).until(lambda d: "waiting" in text_of(d, row))
        assert f"acting as {OPERATOR}" in driver.find_element(By.CSS_SELECTOR, "header").text
        driver.execute_script("window.castwatchNotReloaded = true")

        publisher = broadcast_in_background(kafka_broker.url, stream, files)
        WebDriverWait(driver, 150, poll_frequency=0.5).until(lambda d: "Song 22" in text_of(d, "#recent tr"))
        WebDriverWait(driver, 20).until(lambda d: "live" in text_of(d, row) and "Song 22" in text_of(d, row))
        with psycopg.connect(db_url) as conn:
            ((event_id,),) = conn.execute("SELECT detection_id::text FROM infringements").fetchall()
        card = f'#infringements .infr[data-key="{event_id}"]'
        WebDriverWait(driver, 10).until(lambda d: "Acme Music" in text_of(d, card))
        assert "open" in text_of(driver, card) and stream in text_of(driver, card)
        driver.find_element(By.CSS_SELECTOR, f"{card} input[name=note]").send_keys("called the station")
        driver.find_element(By.CSS_SELECTOR, f'{card} button[data-action="acknowledge"]').click()
        WebDriverWait(driver, 20).until(lambda d: f"by {OPERATOR}" in text_of(d, card))
        assert driver.execute_script("return window.castwatchNotReloaded") is True, "the page was reloaded"
        assert "acknowledged" in text_of(driver, card) and "called the station" in text_of(driver, card)
        assert driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]") == [1366, 1366]
    finally:
        screenshot = artefacts / "dashboard.png"  # also when the test failed: what the page showed then
        assert driver.save_screenshot(str(screenshot))
        print(f"dashboard screenshot: {screenshot}")
        driver.quit()
        dashboard.terminate()
        dashboard.wait(timeout=30)
        worker_output = stop_worker(worker)
        if publisher is not None:
            publisher.join(timeout=90)
    with psycopg.connect(db_url) as conn:
        status, updated_by, recent = conn.execute(
            "SELECT status, updated_by, now() - updated_at < interval '5 minutes' FROM infringements WHERE detection_id = %s",
            (event_id,),
        ).fetchone()
        logged = conn.execute(
            "SELECT action, operator, note, now() - at < interval '5 minutes' FROM infringement_actions WHERE detection_id = %s",
            (event_id,),
        ).fetchall()
    assert (status, updated_by, recent) == ("acknowledged", OPERATOR, True), worker_output[-2000:]
    assert logged == [("acknowledge", OPERATOR, "called the station", True)]
    assert screenshot.stat().st_size > 20_000


@pytest.mark.slow
def test_page_loads_and_redraws_500_streams(db_url: str, conn: psycopg.Connection) -> None:
    track = add_track(conn, "Everywhere", ("Acme Music",))
    conn.execute(
        """INSERT INTO streams (id, name, licensee, territory)
           SELECT 'fm-' || lpad(i::text, 3, '0'), 'FM ' || i, 'Radio Ltd', 'GB' FROM generate_series(1, 500) i"""
    )
    conn.execute(
        """INSERT INTO stream_state (stream_id, state, updated_at)
           SELECT id, jsonb_build_object('end_s', extract(epoch FROM now()) - 2), now() FROM streams"""
    )
    for i in range(1, 501, 5):
        add_play(conn, f"fm-{i:03d}", track, 30, None, licensed=i % 10 != 1)
    conn.commit()
    port = free_port()
    dashboard = start_dashboard(db_url, port)
    driver = browser()
    rows = "return [...document.querySelectorAll('#streams tr')].map((r) => r.dataset.key)"
    try:
        start = time.perf_counter()
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20, poll_frequency=0.05).until(lambda d: len(d.execute_script(rows)) == 500)
        loaded = time.perf_counter() - start
        print(f"500 streams on the page {loaded:.2f} s after navigation")
        assert loaded < 3.0
        assert driver.execute_script(rows)[:2] == ["fm-001", "fm-002"]
        conn.execute(
            "UPDATE stream_state SET updated_at = now() - interval '5 minutes' WHERE stream_id IN ('fm-250', 'fm-499')"
        )
        conn.commit()
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(rows)[:2] == ["fm-250", "fm-499"])
        keys = driver.execute_script(rows)
        assert len(keys) == 500 and len(set(keys)) == 500
        assert "silent 5 min" in text_of(driver, '#streams tr[data-key="fm-250"]')
        assert driver.find_element(By.ID, "status").text.startswith("updated")
        assert text_of(driver, "#infringements .infr").count("Everywhere") == 50
    finally:
        driver.quit()
        dashboard.terminate()
        dashboard.wait(timeout=30)

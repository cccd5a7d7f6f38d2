"""The dashboard (monitor/web): liveness rules, the JSON API on a real database, the one write, access rules, speed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitor import cli
from monitor.settings import Settings, SettingsError
from monitor.web import DashboardError
from monitor.web.data import LAGGING_AFTER_S, SILENT_AFTER_S, ActionError, check_action, liveness
from monitor.rights.localdb import free_port
from monitor.web.server import Access, access_for, create_app, is_loopback, serve

CSRF = "test-csrf-token"
TOKEN = "s3cret-token-0123456789"


def test_liveness_rules() -> None:
    now = 1_800_000_000.0
    assert liveness(now, None, None).state == "waiting"
    assert liveness(now, now - 2, now - 4) == liveness(now, now - 2, now - 4)
    live = liveness(now, now - 2, now - 4)
    assert (live.state, live.seconds) == ("live", 2.0)
    assert liveness(now, now - 2, now + 60).seconds == 0.0  # capture clock ahead: not behind
    lagging = liveness(now, now - 1, now - 1 - LAGGING_AFTER_S - 5)
    assert (lagging.state, lagging.seconds) == ("lagging", LAGGING_AFTER_S + 5)
    silent = liveness(now, now - SILENT_AFTER_S - 3, now - 10_000)
    assert (silent.state, silent.seconds) == ("silent", SILENT_AFTER_S + 3)  # silence wins over lag
    assert liveness(now, now - SILENT_AFTER_S, now - SILENT_AFTER_S).state == "live"


@pytest.mark.parametrize(
    ("event_id", "action", "operator", "note", "message", "status"),
    [
        (str(uuid.uuid4()), "delete", "ann", "", "unknown action 'delete'", 404),
        ("42", "resolve", "ann", "", "'42' is not an infringement id", 404),
        (str(uuid.uuid4()), "resolve", "  ", "", "say who you are", 400),
        (str(uuid.uuid4()), "resolve", "a" * 101, "", "at most 100 printable", 400),
        (str(uuid.uuid4()), "resolve", "an\tn", "", "at most 100 printable", 400),
        (str(uuid.uuid4()), "resolve", "ann", "x" * 1001, "note: at most 1000", 400),
    ],
)
def test_bad_actions_say_what_is_wrong(event_id: str, action: str, operator: str, note: str, message: str, status: int) -> None:
    with pytest.raises(ActionError, match=message) as caught:
        check_action(event_id, action, operator, note)
    assert caught.value.status == status


def test_loopback_only_without_a_token() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.5", "example.org", "localhost.evil.example", ""))
    with pytest.raises(DashboardError, match="--host 0.0.0.0 is not loopback: set CASTWATCH_DASHBOARD_TOKEN"):
        access_for("0.0.0.0", None, "ann")
    assert access_for("0.0.0.0", TOKEN, "ann").token == TOKEN
    assert access_for("127.0.0.1", None, "ann").csrf != access_for("127.0.0.1", None, "ann").csrf


def test_token_must_be_long_enough() -> None:
    with pytest.raises(SettingsError, match="at least 16 printable characters without spaces .found 5."):
        Settings.from_env({"CASTWATCH_DASHBOARD_TOKEN": "short"})
    assert Settings.from_env({"CASTWATCH_DASHBOARD_TOKEN": TOKEN}).dashboard_token == TOKEN
    assert Settings.from_env({}).dashboard_token is None


def test_cli_refuses_a_public_bind_without_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CASTWATCH_DASHBOARD_TOKEN", raising=False)
    assert cli.main(["dashboard", "--host", "0.0.0.0"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("error: --host 0.0.0.0 is not loopback") and "Traceback" not in err


def run_client(db_url: str, access: Access, test: Callable[[TestClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with TestClient(TestServer(create_app(db_url, access))) as client:
            return await test(client)

    return asyncio.run(main())


def add_track(conn: psycopg.Connection, title: str, holders: tuple[str, ...]) -> int:
    (track_id,) = conn.execute(
        "INSERT INTO tracks (title, artist, isrc, duration_s, content_sha256, source) VALUES (%s, 'Artist', 'GBAAA2600001', 180,"
        " sha256(%s::bytea), 'test') RETURNING id",
        (title, title.encode()),
    ).fetchone()
    for holder in holders:
        conn.execute("INSERT INTO holders (name) VALUES (%s) ON CONFLICT DO NOTHING", (holder,))
        conn.execute("INSERT INTO ownership (track_id, holder_id, share) SELECT %s, id, 50 FROM holders WHERE name = %s", (track_id, holder))
    return track_id


def add_play(conn: psycopg.Connection, stream: str, track: int, ago_s: float, length_s: float | None, licensed: bool) -> str:
    """A detection that started ``ago_s`` before now (ended after ``length_s``, or still playing), and its infringement."""
    event_id = str(uuid.uuid4())
    conn.execute(
        """INSERT INTO detections (event_id, stream_id, track_id, started_at, ended_at, ref_start_s, ref_end_s, score, speed,
                                   licensed, state)
           VALUES (%(id)s, %(stream)s, %(track)s, now() - make_interval(secs => %(ago)s),
                   now() - make_interval(secs => %(ago)s) + make_interval(secs => %(len)s), 12.5, 70.25, 0.41, 1.02,
                   %(licensed)s, %(state)s)""",
        {"id": event_id, "stream": stream, "track": track, "ago": ago_s, "len": length_s, "licensed": licensed,
         "state": "started" if length_s is None else "ended"},
    )  # fmt: skip
    if not licensed:
        conn.execute("INSERT INTO infringements (detection_id) VALUES (%s)", (event_id,))
    return event_id


def save_state(conn: psycopg.Connection, stream: str, saved_ago_s: float, behind_s: float) -> None:
    """A worker state save ``saved_ago_s`` ago of audio captured ``behind_s`` before that."""
    conn.execute(
        """INSERT INTO stream_state (stream_id, state, updated_at)
           VALUES (%(s)s, jsonb_build_object('end_s', extract(epoch FROM now()) - %(ago)s - %(behind)s),
                   now() - make_interval(secs => %(ago)s))""",
        {"s": stream, "ago": saved_ago_s, "behind": behind_s},
    )


@pytest.fixture
def station(conn: psycopg.Connection) -> dict[str, Any]:
    """Four streams, one in each state; plays licensed and not; one infringement already resolved."""
    for sid, name in (("fm-live", "FM Live"), ("fm-lag", "FM Lag"), ("fm-quiet", "FM Quiet"), ("fm-new", "FM New")):
        conn.execute("INSERT INTO streams (id, name, licensee, territory) VALUES (%s, %s, 'Radio Ltd', 'GB')", (sid, name))
    save_state(conn, "fm-live", 1, 2)
    save_state(conn, "fm-lag", 1, 120)
    save_state(conn, "fm-quiet", 300, 1)
    save_state(conn, "web-only", 2, 1)  # monitored but not registered
    song = add_track(conn, "Night Drive", ("Northwind Records", "Acme Music"))
    other = add_track(conn, "Blue Hour", ("Acme Music",))
    ids = {
        "playing": add_play(conn, "fm-live", song, 40, None, licensed=False),
        "earlier": add_play(conn, "fm-live", other, 400, 180, licensed=True),
        "lagged": add_play(conn, "fm-lag", other, 900, 200, licensed=False),
        "resolved": add_play(conn, "fm-quiet", song, 3000, 100, licensed=False),
    }
    conn.execute("UPDATE infringements SET status = 'resolved' WHERE detection_id = %s", (ids["resolved"],))
    conn.commit()
    return ids


def loopback_access() -> Access:
    return Access(None, "ann", CSRF)


def test_overview_shows_every_view(db_url: str, station: dict[str, str]) -> None:
    async def test(client: TestClient) -> tuple[dict[str, Any], str, str]:
        response = await client.get("/api/overview")
        assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
        page = await client.get("/")
        script = await client.get("/static/dashboard.js")
        assert script.status == 200 and script.content_type == "text/javascript"
        return await response.json(), await page.text(), await script.text()

    data, page, script = run_client(db_url, loopback_access(), test)
    streams = {s["id"]: s for s in data["streams"]}
    assert {k: s["state"] for k, s in streams.items()} == {
        "fm-live": "live", "fm-lag": "lagging", "fm-quiet": "silent", "fm-new": "waiting", "web-only": "live"
    }  # fmt: skip
    assert streams["fm-lag"]["state_seconds"] == pytest.approx(120, abs=0.5)
    assert streams["fm-quiet"]["state_seconds"] == pytest.approx(300, abs=3)
    assert streams["web-only"]["registered"] is False and streams["fm-new"]["registered"] is True
    playing = streams["fm-live"]["playing"]
    assert (playing["title"], playing["licensed"]) == ("Night Drive", False)
    assert streams["fm-lag"]["playing"] is None and streams["fm-new"]["playing"] is None
    assert data["counts"] == {"streams": 5, "live": 2, "lagging": 1, "silent": 1, "waiting": 0 + 1, "open": 2, "acknowledged": 0}
    assert [d["event_id"] for d in data["recent"]] == [station[k] for k in ("playing", "earlier", "lagged", "resolved")]
    infringements = {i["event_id"]: i for i in data["infringements"]}
    assert set(infringements) == {station["playing"], station["lagged"]}  # the resolved one is not shown
    evidence = infringements[station["playing"]]
    assert evidence["holders"] == "Acme Music, Northwind Records"
    assert (evidence["stream_id"], evidence["stream_name"], evidence["isrc"]) == ("fm-live", "FM Live", "GBAAA2600001")
    assert (evidence["ref_start_s"], evidence["ref_end_s"], evidence["score"], evidence["status"]) == (12.5, 70.25, 0.41, "open")
    assert evidence["ended_at"] is None and evidence["started_at"].endswith("Z")
    assert len(data["hourly"]) == 24
    assert sum(h["plays"] for h in data["hourly"]) == 4 and sum(h["infringements"] for h in data["hourly"]) == 3
    assert CSRF in page and 'content="ann"' in page and "/static/dashboard.js" in page
    assert "http" not in page.replace('http-equiv', '') and "http" not in script  # no external assets


def post(client: TestClient, event_id: str, action: str, **kwargs: Any) -> Any:
    headers = {"X-CSRF-Token": CSRF, **kwargs.pop("headers", {})}
    return client.post(f"/api/infringements/{event_id}/{action}", headers=headers, **kwargs)


def actions(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT detection_id::text, action, operator, note, now() - at < interval '1 minute' FROM infringement_actions ORDER BY id"
        ).fetchall()


def test_acknowledge_then_resolve_records_who_and_when(db_url: str, station: dict[str, str]) -> None:
    target = station["playing"]

    async def test(client: TestClient) -> list[tuple[int, Any]]:
        results = []
        for action, body in (("acknowledge", {"note": "asked the station", "operator": "mallory"}), ("acknowledge", {}),
                             ("resolve", {"note": ""}), ("resolve", {})):  # fmt: skip
            response = await post(client, target, action, data=body)
            results.append((response.status, await response.json()))
        overview = await (await client.get("/api/overview")).json()
        results.append((0, [i["event_id"] for i in overview["infringements"]]))
        return results

    (s1, ack), (s2, again), (s3, resolved), (s4, late), (_, still) = run_client(db_url, loopback_access(), test)
    assert (s1, ack["status"], ack["updated_by"], ack["note"]) == (200, "acknowledged", "ann", "asked the station")
    assert (s2, again["error"]) == (409, f"infringement {target} is acknowledged: it cannot be acknowledged now")
    assert (s3, resolved["status"], resolved["note"]) == (200, "resolved", "asked the station")  # an empty note keeps it
    assert s4 == 409 and "is resolved" in late["error"]
    assert still == [station["lagged"]]  # the cache was dropped after the write
    # without a token the operator is the one the server started with, whatever the form says
    assert actions(db_url) == [(target, "acknowledge", "ann", "asked the station", True), (target, "resolve", "ann", "", True)]


def test_writes_need_the_csrf_token_and_the_same_origin(db_url: str, station: dict[str, str]) -> None:
    target = station["playing"]

    async def test(client: TestClient) -> list[tuple[int, str]]:
        attempts = [
            client.post(f"/api/infringements/{target}/resolve", data={"operator": "x"}),
            post(client, target, "resolve", headers={"X-CSRF-Token": "guess"}),
            post(client, target, "resolve", headers={"Origin": "http://evil.example"}),
            client.get("/api/overview", headers={"Host": "evil.example:8088"}),  # DNS rebinding
            post(client, str(uuid.uuid4()), "resolve"),
            post(client, target, "resolve", data="{not json", headers={"Content-Type": "application/json"}),
        ]
        return [(r.status, (await r.json())["error"]) for r in [await a for a in attempts]]

    results = run_client(db_url, loopback_access(), test)
    assert [s for s, _ in results] == [403, 403, 403, 403, 404, 400]
    assert "X-CSRF-Token header is missing or wrong" in results[0][1] and "cross-origin" in results[2][1]
    assert "answers loopback names only" in results[3][1] and "not valid JSON" in results[5][1]
    assert actions(db_url) == []


def test_token_mode(db_url: str, station: dict[str, str]) -> None:
    target = station["lagged"]
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def test(client: TestClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["none"] = (await client.get("/api/overview")).status
        out["wrong"] = (await client.get("/api/overview", headers={"Authorization": "Bearer nope"})).status
        out["bearer"] = (await client.get("/api/overview", headers=bearer)).status
        login = await client.get(f"/?token={TOKEN}", allow_redirects=False)
        out["login"] = (login.status, login.headers["Location"], login.cookies["castwatch_dashboard"]["samesite"])
        out["page"] = (await client.get("/")).status  # the client keeps the cookie
        nameless = await client.post(f"/api/infringements/{target}/acknowledge", headers=bearer)
        out["nameless"] = (nameless.status, (await nameless.json())["error"])
        named = await client.post(f"/api/infringements/{target}/acknowledge", headers={**bearer, "X-Castwatch-Operator": "Bob"})
        out["named"] = (named.status, (await named.json())["updated_by"])
        cookie_no_csrf = await client.post(f"/api/infringements/{target}/resolve", data={"operator": "Carol"})
        out["cookie_no_csrf"] = cookie_no_csrf.status
        cookie = await post(client, target, "resolve", data={"operator": "Carol", "note": "paid"})
        out["cookie"] = (cookie.status, (await cookie.json())["updated_by"])
        return out

    out = run_client(db_url, Access(TOKEN, "", CSRF), test)
    assert (out["none"], out["wrong"], out["bearer"]) == (401, 401, 200)
    assert out["login"] == (302, "/", "Strict") and out["page"] == 200
    assert out["nameless"][0] == 400 and "say who you are" in out["nameless"][1]
    assert out["named"] == (200, "Bob") and out["cookie_no_csrf"] == 403 and out["cookie"] == (200, "Carol")
    assert actions(db_url) == [(target, "acknowledge", "Bob", "", True), (target, "resolve", "Carol", "paid", True)]


def test_database_outage_is_reported_not_crashed(pg_server: Any) -> None:
    url = psycopg.conninfo.make_conninfo(pg_server.fresh_database(), dbname="no_such_database")

    async def test(client: TestClient) -> tuple[int, str]:
        response = await client.get("/api/overview")
        return response.status, (await response.json())["error"]

    status, error = run_client(url, loopback_access(), test)
    assert status == 503 and "the database is unreachable" in error and "retrying" in error


def test_a_busy_port_is_a_clear_error(db_url: str) -> None:
    import socket

    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        with pytest.raises(DashboardError, match=f"cannot listen on 127.0.0.1:{port}: .*try --port"):
            serve(db_url, "127.0.0.1", port, loopback_access())


def test_a_role_without_the_grant_gets_a_clear_error(db_url: str, station: dict[str, str]) -> None:
    from test_rights_db import login_as

    async def test(client: TestClient) -> tuple[int, str]:
        response = await post(client, station["playing"], "resolve")
        return response.status, (await response.json())["error"]

    status, error = run_client(login_as(db_url, "castwatch_reader"), loopback_access(), test)
    assert status == 500 and error.startswith("the database refused: permission denied for table infringements")
    assert actions(db_url) == []


STREAMS = 500


@pytest.mark.slow
def test_overview_is_fast_with_hundreds_of_streams(db_url: str, conn: psycopg.Connection) -> None:
    """500 streams, 50,000 plays, 5,000 open infringements: the API answers in well under a second."""
    track = add_track(conn, "Everywhere", ("Acme Music",))
    params = {"n": STREAMS, "track": track}
    conn.execute(
        """INSERT INTO streams (id, name, licensee, territory)
           SELECT 'fm-' || i, 'FM ' || i, 'Licensee ' || (i %% 40), 'GB' FROM generate_series(1, %(n)s) i""",
        params,
    )
    conn.execute(
        """INSERT INTO stream_state (stream_id, state, updated_at)
           SELECT 'fm-' || i, jsonb_build_object('end_s', extract(epoch FROM now()) - 3), now() - interval '1 second'
           FROM generate_series(1, %(n)s) i""",
        params,
    )
    conn.execute(
        """INSERT INTO detections (event_id, stream_id, track_id, started_at, ended_at, ref_start_s, ref_end_s, score, speed,
                                   licensed, state)
           SELECT gen_random_uuid(), 'fm-' || (i %% %(n)s + 1), %(track)s, now() - make_interval(secs => i * 7),
                  CASE WHEN i > %(n)s THEN now() - make_interval(secs => i * 7 - 60) END, 0, 60, 0.3, 1.0, i %% 10 <> 0,
                  CASE WHEN i > %(n)s THEN 'ended' ELSE 'started' END
           FROM generate_series(1, 50000) i""",
        params,
    )
    conn.execute("INSERT INTO infringements (detection_id) SELECT event_id FROM detections WHERE NOT licensed")
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()

    async def test(client: TestClient) -> tuple[float, dict[str, Any], float]:
        start = time.perf_counter()
        response = await client.get("/api/overview")
        body = await response.json()
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(10):
            await client.get("/api/overview")
        return first, body, (time.perf_counter() - start) / 10

    first, body, cached = run_client(db_url, loopback_access(), test)
    print(f"overview of {STREAMS} streams: {first * 1000:.0f} ms, then {cached * 1000:.1f} ms a request from the cache")
    assert len(body["streams"]) == STREAMS and all(s["playing"] for s in body["streams"])
    assert body["counts"]["open"] == 5000 and len(body["infringements"]) == 100 and len(body["recent"]) == 50
    assert first < 0.5, f"{first:.3f} s"

"""``castwatch dashboard``: a small aiohttp app serving the live page, its JSON API and the one write.

Routes:

- ``GET /``: the page (HTML, CSS and JS from ``static/``, no external assets);
  it fetches ``/api/overview`` every ``REFRESH_S`` seconds and redraws what changed;
- ``GET /api/overview``: everything the page shows (``monitor.web.data.overview``),
  computed at most once per ``CACHE_S`` however many clients poll;
- ``POST /api/infringements/{event_id}/acknowledge`` or ``/resolve``
  (form or JSON fields ``operator`` and ``note``): the one write.

Access: without a token (loopback only) every request must name a loopback
host in ``Host`` (no DNS rebinding), and the operator is fixed when the
server starts. With ``CASTWATCH_DASHBOARD_TOKEN`` every request carries it,
as ``Authorization: Bearer TOKEN`` or the cookie that ``/?token=TOKEN`` sets,
and a write names its operator. A write from the page (cookie or no token)
must carry the page's CSRF token in ``X-CSRF-Token`` and, when the browser
sends ``Origin``, come from the same origin.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import psycopg
from aiohttp import web

from monitor.web import DashboardError, data

log = logging.getLogger(__name__)

REFRESH_S = 2.0
CACHE_S = 1.0
COOKIE = "castwatch_dashboard"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """Who may do what: the token (``None``: loopback, no token) and the fixed operator without one."""

    token: str | None
    operator: str
    csrf: str


class Database:
    """One connection, opened on first use and again after it is lost; queries take turns on it."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def run(self, action: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._url, application_name="castwatch-dashboard", connect_timeout=5
                    )
                return await action(self._conn)
            except psycopg.OperationalError as e:
                if self._conn is not None:
                    await self._conn.close()
                self._conn = None
                raise web.HTTPServiceUnavailable(
                    text=json.dumps({"error": f"the database is unreachable ({str(e).strip()}); retrying"}),
                    content_type="application/json",
                ) from e
            except psycopg.Error as e:  # e.g. a role without the grants of deploy/postgres/roles.sql
                raise web.HTTPInternalServerError(
                    text=json.dumps({"error": f"the database refused: {str(e).strip()}"}), content_type="application/json"
                ) from e

    async def overview(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= CACHE_S:
            self._cached = (now, await self.run(data.overview))
        return self._cached[1]

    def forget(self) -> None:
        """Drop the cached overview (after a write, so that the next poll shows it)."""
        self._cached = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def _guard(access: Access) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        by_cookie = False
        if access.token is None:
            if not is_loopback(request.url.host or ""):
                return _json_error(403, f"host {request.host!r} refused: without a token the dashboard answers loopback names only")
        elif _same(_bearer(request), access.token):
            pass
        elif _same(request.cookies.get(COOKIE), access.token):
            by_cookie = True
        elif request.method == "GET" and request.path == "/" and _same(request.query.get("token"), access.token):
            redirect = web.HTTPFound("/")
            redirect.set_cookie(COOKIE, access.token, httponly=True, samesite="Strict", path="/")
            raise redirect
        else:
            return _json_error(401, "a token is required: open /?token=TOKEN once, or send 'Authorization: Bearer TOKEN'")
        if request.method == "POST" and (access.token is None or by_cookie):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return _json_error(403, f"cross-origin write refused (Origin {origin})")
            if not _same(request.headers.get("X-CSRF-Token"), access.csrf):
                return _json_error(403, "write refused: the X-CSRF-Token header is missing or wrong (reload the page)")
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
        return response

    return guard


def _static(name: str) -> str:
    return resources.files("monitor.web").joinpath("static", name).read_text(encoding="utf-8")


def create_app(database_url: str, access: Access) -> web.Application:
    db = Database(database_url)
    page = _static("dashboard.html")
    assets = {"dashboard.css": ("text/css", _static("dashboard.css")), "dashboard.js": ("text/javascript", _static("dashboard.js"))}
    operator = "" if access.token else access.operator

    async def index(request: web.Request) -> web.Response:
        body = (
            page.replace("{{csrf}}", access.csrf)
            .replace("{{operator}}", html.escape(operator))
            .replace("{{refresh_ms}}", str(int(REFRESH_S * 1000)))
        )
        return web.Response(text=body, content_type="text/html")

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(text=found[1], content_type=found[0])

    async def api_overview(request: web.Request) -> web.Response:
        return web.json_response(await db.overview())

    async def api_act(request: web.Request) -> web.Response:
        fields: dict[str, Any]
        if request.content_type == "application/json":
            try:
                fields = await request.json()
            except json.JSONDecodeError as e:
                return _json_error(400, f"the body is not valid JSON: {e}")
            if not isinstance(fields, dict):
                return _json_error(400, "the body must be a JSON object with 'operator' and 'note'")
        else:
            fields = dict(await request.post())
        note = fields.get("note", "")
        who = operator or str(fields.get("operator") or request.headers.get("X-Castwatch-Operator", ""))
        try:
            detection_id, who, note = data.check_action(
                request.match_info["event_id"], request.match_info["action"], who, str(note)
            )
            done = await db.run(lambda conn: data.act(conn, detection_id, request.match_info["action"], who, note))
        except data.ActionError as e:
            return _json_error(e.status, str(e))
        db.forget()
        log.info("%s %s by %s", request.match_info["action"], detection_id, who)
        return web.json_response(done)

    async def close(app: web.Application) -> None:
        await db.close()

    app = web.Application(middlewares=[_guard(access)], client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/api/overview", api_overview)
    app.router.add_post("/api/infringements/{event_id}/{action}", api_act)
    app.on_cleanup.append(close)
    return app


def access_for(host: str, token: str | None, operator: str) -> Access:
    """The access rules for serving on ``host``; refuses a non-loopback host without a token."""
    if token is None and not is_loopback(host):
        raise DashboardError(
            f"--host {host} is not loopback: set CASTWATCH_DASHBOARD_TOKEN (at least 16 characters, e.g. from"
            " `openssl rand -hex 16`) so that only people with the token can see the dashboard, or bind 127.0.0.1"
        )
    return Access(token, operator, secrets.token_urlsafe(24))


def serve(database_url: str, host: str, port: int, access: Access) -> None:
    """Serve until SIGINT or SIGTERM."""
    app = create_app(database_url, access)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    except OSError as e:
        raise DashboardError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another dashboard running? try --port)") from e

"""The loopback TCP listener for browser kiosk apps (`api.http_listen`): the API with a browser's guards.

A browser is a confused deputy: any page it shows can aim requests at 127.0.0.1. So, on this
listener only:

- `Host` must name the listener itself (`127.0.0.1:PORT`, `localhost:PORT`): a DNS-rebinding page
  reaches us under its own host name and is refused (403 `host-not-allowed`).
- A request whose `Origin` is not in `api.allowed_origins` (the listener's own origins are always
  in) is refused (403 `origin-not-allowed`), as is a cross-site request without `Origin` that the
  browser marks `Sec-Fetch-Site: cross-site` / `same-site` (an `<img>` or `<script>` tag).
- CORS: preflights are answered (204) only for allowed origins, methods and headers; responses
  to allowed origins carry `Access-Control-Allow-Origin` for that origin alone, never `*`, and no
  credentials (the token travels in `Authorization`, never in a cookie).
- Only the kiosk's routes are served: health, devices, stations, sessions (not maintenance),
  the OpenAPI document and the /kiosk/ page; /v1/status and /metrics stay on the Unix socket.
- EventSource cannot send `Authorization`: `POST /v1/sessions/{id}/stream-ticket` (with the
  bearer token) returns a ticket valid once, for 30 s, for that session's event stream:
  `GET /v1/sessions/{id}/events?ticket=...`.
- At most MAX_CONNECTIONS connections at once (more are answered 503 and closed), and a
  connection that sends nothing for FIRST_BYTE_TIMEOUT_S is closed.

Origin semantics: RFC 6454 (serialisation `scheme://host[:port]`) and the Fetch standard's CORS
protocol (preflight `Access-Control-Request-Method/-Headers`, `Vary: Origin`); DNS rebinding and
the Host check: the W3C Private Network Access draft and RFC 9110 §7.2 (Host).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from multidict import CIMultiDict

from gateway.api.app import CONTEXT, build_app, json_response
from gateway.api.context import ApiContext
from gateway.api.problems import Problem
from gateway.api.receipt_view import decode_receipt
from gateway.api.sessions import session_of
from gateway.api.tickets import StreamTickets
from gateway.config import GatewayConfig, loopback_address
from gateway.drivers_registry.capabilities import PRINTER
from gateway.errors import StartupError
from gateway.simulation import is_simulation

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_CONNECTIONS = 64
FIRST_BYTE_TIMEOUT_S = 10.0
PREFLIGHT_MAX_AGE_S = 600
RECEIPTS_SHOWN = 20
ALLOWED_METHODS = ("GET", "POST", "DELETE")
ALLOWED_HEADERS = frozenset({"authorization", "content-type", "last-event-id"})
EXPOSED_HEADERS = "Retry-After, Location"
_ROUTES = re.compile(
    r"^/(?:|kiosk(?:/.*)?|v1/health|v1/devices|v1/stations|v1/openapi\.json"
    r"|v1/sessions(?:/[^/]+(?:/(?!maintenance(?:/|$)).*)?)?)$"
)
_EVENTS = re.compile(r"^/v1/sessions/(?P<session>[^/]+)/events$")
_REFUSED_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 26\r\nConnection: close\r\n\r\ntoo many open connections\n"
)


def _problem(status: int, kind: str, title: str, detail: str, request: web.Request) -> web.StreamResponse:
    return Problem(status, kind, title, detail).response(request.path)


class BrowserGuard:
    """The middleware of the browser listener: Host, Origin, CORS, route allow-list, tickets."""

    def __init__(self, hosts: set[str], origins: set[str], tickets: StreamTickets) -> None:
        self.hosts = hosts
        self.origins = origins
        self.tickets = tickets

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "").lower()
        if host not in self.hosts:
            log.warning("browser_host_refused", host=host[:80])
            return _problem(
                403,
                "host-not-allowed",
                "Host not allowed",
                "this listener answers only to its own address",
                request,
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.origins:
            log.warning("browser_origin_refused", origin=origin[:80], path=request.path)
            return _problem(
                403,
                "origin-not-allowed",
                "Origin not allowed",
                f"origin {origin[:80]} is not in api.allowed_origins",
                request,
            )
        if origin is None and request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            return _problem(
                403,
                "origin-not-allowed",
                "Origin not allowed",
                "cross-site request without an allowed Origin",
                request,
            )
        if request.method == "OPTIONS":
            return self._preflight(request, origin)
        if not _ROUTES.match(request.path):
            return _problem(404, "not-found", "Not found", "not served on the browser listener", request)
        ticketed = self._with_ticket(request)
        if ticketed is None:
            detail = "tickets are valid once, for 30 s, for one session"
            return _problem(401, "invalid-ticket", "Invalid stream ticket", detail, request)
        return await handler(ticketed)

    async def add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: an allowed origin may read the answer (event streams included)."""
        origin = request.headers.get("Origin")
        if origin is not None and origin in self.origins and request.method != "OPTIONS":
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.headers.add("Vary", "Origin")

    def _preflight(self, request: web.Request, origin: str | None) -> web.StreamResponse:
        method = request.headers.get("Access-Control-Request-Method", "")
        asked = {
            h.strip().lower()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        }
        if origin is None or method not in ALLOWED_METHODS or not asked <= ALLOWED_HEADERS:
            return _problem(
                403, "preflight-refused", "Preflight refused", "method or headers not allowed", request
            )
        if not _ROUTES.match(request.path):
            return _problem(404, "not-found", "Not found", "not served on the browser listener", request)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
                "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                "Vary": "Origin",
            },
        )

    def _with_ticket(self, request: web.Request) -> web.Request | None:
        """An events request carrying `?ticket=` gets its session's bearer token, once; None: refused."""
        ticket = request.query.get("ticket")
        match = _EVENTS.match(request.path)
        if ticket is None or match is None or request.method != "GET":
            return request
        token = self.tickets.redeem(ticket, match["session"])
        if token is None:
            return None
        headers = CIMultiDict(request.headers)
        headers["Authorization"] = f"Bearer {token}"
        return request.clone(headers=headers)


def kiosk_dir() -> Path:
    """The reference kiosk page's files (package data)."""
    return Path(str(resources.files("gateway").joinpath("kiosk")))


ticket_routes = web.RouteTableDef()


@ticket_routes.post("/v1/sessions/{session_id}/stream-ticket")
async def stream_ticket(request: web.Request) -> web.Response:
    """A single-use ticket for this session's event stream (EventSource cannot send Authorization)."""
    session = session_of(request)
    token = request.headers["Authorization"].split(None, 1)[1]
    tickets = request.app[CONTEXT].stream_tickets
    ticket = tickets.mint(session.id, token)
    return json_response(
        {
            "ticket": ticket,
            "expires_in_s": tickets.ttl_s,
            "url": f"/v1/sessions/{session.id}/events?ticket={ticket}",
        },
        status=201,
    )


def _routes() -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/")
    async def root(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/kiosk/")

    @routes.get("/kiosk/sim/receipts")
    async def sim_receipts(request: web.Request) -> web.Response:
        """What the simulated printers printed, decoded (the page shows the citizen the receipt)."""
        ctx = request.app[CONTEXT]
        if not is_simulation(ctx.config.devices):
            raise Problem(404, "not-found", "Not found", "receipts are shown for simulated printers only")
        receipts = []
        for managed in ctx.devices.devices.values():
            if managed.kind == PRINTER.kind and managed.simulator is not None:
                printed = list(managed.simulator.printed)
                for index in range(max(0, len(printed) - RECEIPTS_SHOWN), len(printed)):
                    decoded = decode_receipt(printed[index]).as_dict()
                    receipts.append({"device": managed.name, "index": index, **decoded})
        return json_response({"simulated": True, "receipts": receipts})

    @routes.get("/kiosk")
    async def kiosk_slash(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/kiosk/")

    @routes.get("/kiosk/")
    async def kiosk_index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(kiosk_dir() / "index.html", headers=_PAGE_HEADERS)

    return routes


# The page loads nothing from elsewhere and may not be framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class _Limited(asyncio.Protocol):
    """Wraps aiohttp's protocol: counts the connection, closes it when it stays silent."""

    def __init__(self, inner: Any, listener: BrowserListener) -> None:
        self._inner = inner
        self._listener = listener
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._listener.live += 1
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._listener.first_byte_timeout_s, self._silent)
        self._inner.connection_made(transport)

    def _silent(self) -> None:
        if self._transport is not None:
            self._listener.silent_closed += 1
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.live -= 1
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)


class _Refuse(asyncio.Protocol):
    """Over the connection cap: a 503 and close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_REFUSED_503)
        transport.close()


class BrowserListener:
    """The API app with the browser guard on its own loopback TCP listener."""

    def __init__(
        self,
        ctx: ApiContext,
        route_tables: list[web.RouteTableDef],
        *,
        listen: str,
        allowed_origins: list[str],
        max_connections: int = MAX_CONNECTIONS,
        first_byte_timeout_s: float = FIRST_BYTE_TIMEOUT_S,
    ) -> None:
        self.ctx = ctx
        self.host, self.port = loopback_address(listen, "http_listen")
        self.tickets = ctx.stream_tickets
        self.guard = BrowserGuard(set(), set(allowed_origins), self.tickets)
        self.max_connections = max_connections
        self.first_byte_timeout_s = first_byte_timeout_s
        self.live = 0
        self.refused = 0
        self.silent_closed = 0
        self.app = build_app(ctx, [*route_tables, _routes()])
        self.app.middlewares.insert(0, self.guard.middleware)
        self.app.on_response_prepare.append(self.guard.add_cors)
        self.app.router.add_static("/kiosk/", kiosk_dir(), show_index=False, follow_symlinks=False)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @property
    def banner(self) -> str:
        """The console line `make run` shows."""
        return f"kiosk page: {self.url}/kiosk/ (browser apps: {self.url}, rules in docs/api.md)"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _factory(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        if self.live >= self.max_connections:
            self.refused += 1
            return _Refuse()
        return _Limited(self._runner.server(), self)

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0, keepalive_timeout=15.0
        )
        await runner.setup()
        self._runner = runner
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._factory, self.host, self.port, backlog=128)
        except OSError as err:
            await runner.cleanup()
            self._runner = None
            raise StartupError(f"api.http_listen {self.host}:{self.port}: {err.strerror or err}") from err
        self.port = int(self._server.sockets[0].getsockname()[1])
        names = [self.host, "localhost"] if self.host in ("127.0.0.1", "::1") else [self.host]
        self.guard.hosts = {f"[{n}]:{self.port}" if ":" in n else f"{n}:{self.port}" for n in names}
        self.guard.origins |= {f"http://{h}" for h in self.guard.hosts}
        log.info("browser_listener_started", url=self.url, origins=sorted(self.guard.origins))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()


async def start_browser_listener(
    ctx: ApiContext,
    route_tables: list[web.RouteTableDef],
    config: GatewayConfig,
    *,
    announce: Callable[[str], None],
) -> BrowserListener | None:
    """Start `api.http_listen` if set; a busy port stops only a simulation's page, never production."""
    if not config.api.http_listen:
        return None
    listener = BrowserListener(
        ctx, route_tables, listen=config.api.http_listen, allowed_origins=config.api.allowed_origins
    )
    try:
        await listener.start()
    except StartupError as err:
        if not is_simulation(config.devices):
            raise
        log.warning("browser_listener_not_started", error=str(err))
        announce(f"kiosk page not served: {err}")
        return None
    return listener

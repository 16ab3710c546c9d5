"""The aiohttp application: middlewares (problems, peer credentials, metrics) and route tables."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from aiohttp import web

from gateway.api.context import ApiContext
from gateway.api.problems import Problem, from_http_exception
from gateway.ratelimit import echo
from gateway.sessions import Session

log = structlog.get_logger(__name__)

CONTEXT = web.AppKey("context", ApiContext)
# The session a request proved it holds (its bearer token checked); set by session_of.
AUTHENTICATED = web.RequestKey("authenticated_session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

_PEERCRED = struct.Struct("3i")


def peer_uid(request: web.Request) -> int | None:
    """The connecting process's uid over a Unix socket (SO_PEERCRED), else None."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as application/problem+json; nothing escapes as a bare 500."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(exc).response(request.path)
    except Exception as err:
        from gateway.api.errors import to_problem

        mapped = to_problem(err)
        if mapped is not None:
            return mapped.response(request.path)
        log.exception("request_failed", path=request.path, method=request.method)
        return Problem(500, "internal", "Internal error", "see the gateway log").response(request.path)


def make_peer_middleware(ctx: ApiContext) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def peer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        allowed = ctx.config.api.allowed_uids
        if allowed:
            uid = peer_uid(request)
            if uid is not None and uid not in allowed:
                raise Problem(
                    403,
                    "peer-not-allowed",
                    "Peer not allowed",
                    f"uid {uid} is not in api.allowed_uids",
                )
        return await handler(request)

    return peer_middleware


def make_metrics_middleware(ctx: ApiContext) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            ctx.observe_request(request.method, name, status, time.perf_counter() - start)
            # Only a request that proved it holds the session counts against it: a stranger who
            # knows a session id cannot raise that session's error rate.
            session = request.get(AUTHENTICATED)
            if status >= 500 and session is not None:
                session.errors += 1

    return metrics_middleware


async def read_json(request: web.Request, model: type[T], *, optional: bool = False) -> T:
    """Decode and validate a JSON body into `model`; 400 for malformed, 422 for invalid."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return msgspec.convert({}, model)
        raise Problem(400, "malformed-body", "Malformed body", "a JSON body is required")
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "") and not ctype.endswith("+json"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send application/json, not {ctype}",
        )
    try:
        decoded = msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as err:
        invalid = err
    except (msgspec.DecodeError, RecursionError) as err:
        raise _malformed(err) from err
    else:
        _refuse_duplicate_keys(raw)
        return decoded
    # The typed decoder stops at the first wrong type; a body that is not JSON at all is still a 400.
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as err:
        raise _malformed(err) from err
    raise Problem(422, "invalid-body", "Invalid body", str(invalid)) from invalid


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Problem(400, "malformed-body", "Malformed JSON", f"duplicate key {echo(key)!r}")
        seen[key] = value
    return seen


def _refuse_duplicate_keys(raw: bytes) -> None:
    """400 for an object with a key twice: parsers disagree on which one wins (RFC 8259 §4)."""
    if b"{" not in raw:
        return
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        raise _malformed(err) from err


def _malformed(err: Exception) -> Problem:
    """A body that is not JSON text (also lone UTF-16 surrogates, bad UTF-8, absurd nesting)."""
    detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
    return Problem(400, "malformed-body", "Malformed JSON", detail)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def build_app(ctx: ApiContext, route_tables: list[web.RouteTableDef]) -> web.Application:
    app = web.Application(
        middlewares=[
            make_metrics_middleware(ctx),
            problem_middleware,
            make_peer_middleware(ctx),
        ],
        client_max_size=ctx.config.api.max_body_bytes,
    )
    app[CONTEXT] = ctx

    async def close_streams(_app: web.Application) -> None:
        # Event streams never finish on their own: end them so the drain is not held up.
        for sub in list(ctx.streams):
            sub.close("the gateway is stopping")

    app.on_shutdown.append(close_streams)
    for table in route_tables:
        app.router.add_routes(table)
    return app

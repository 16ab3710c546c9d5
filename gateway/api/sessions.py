"""Session routes: create/inspect/end, device work through the queues, jobs, server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
import structlog
from aiohttp import web

from gateway.api.app import AUTHENTICATED, CONTEXT, json_response, peer_uid, read_json
from gateway.api.context import ApiContext
from gateway.api.problems import Problem
from gateway.devices import ManagedDevice
from gateway.drivers_registry.capabilities import PRINTER, Capability
from gateway.queueing import Position, RequestCancelled
from gateway.sessions import Job, Session, Unauthenticated
from gateway.stations import StationForbidden, StationRequired, UnknownStation

if TYPE_CHECKING:
    from drivers.printer.job import PrintJob

log = structlog.get_logger(__name__)

D = TypeVar("D")
R = TypeVar("R")

routes = web.RouteTableDef()


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["citizen", "technician"] = "citizen"
    station: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    """No free text: feedback may not carry personal data."""

    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    complaint: bool = False
    category: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.-]{1,32}$")] | None = None


class PrintRequest(msgspec.Struct, forbid_unknown_fields=True):
    lines: list[str]
    qr: str | None = None
    cut: bool = True
    # A certificate is a protected operation (auth policy `certificate_print`); a receipt is not.
    document: Literal["receipt", "certificate"] = "receipt"


def station_device(ctx: ApiContext, session: Session, kind: str) -> ManagedDevice:
    """The device of `kind` that serves this session's station (a pool picks a usable member)."""
    managed = ctx.stations.device_for(session.station, kind)
    session.used = True
    return managed


# RFC 6750 §2.1 b64token: what a bearer token may be made of.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(header: str | None) -> str:
    """The token of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1)."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send Authorization: Bearer <token> from POST /v1/sessions")
    if not _B64TOKEN.fullmatch(token):
        # Also bytes that are not UTF-8 (aiohttp hands them over as surrogates): never a token of ours.
        raise Unauthenticated("the bearer token has characters no token of ours has")
    return token


def session_of(request: web.Request, *, recently_ended: bool = False) -> Session:
    """The session named by the path, authenticated by its bearer token (remembered on the request).
    `recently_ended` also finds a session that ended a moment ago (feedback on the way out)."""
    ctx = request.app[CONTEXT]
    authorization = f"Bearer {bearer_token(request.headers.get('Authorization'))}"
    find = ctx.sessions.authenticate_recent if recently_ended else ctx.sessions.authenticate
    session = find(request.match_info["session_id"], authorization)
    request[AUTHENTICATED] = session
    return session


def deadline_of(request: web.Request, managed: ManagedDevice) -> float:
    """The request's deadline: `?deadline_s=` if given (bounded by config), else the device default."""
    raw = request.query.get("deadline_s")
    if raw is None:
        return managed.queue.deadline_s
    try:
        value = float(raw)
    except ValueError as err:
        raise Problem(400, "bad-parameter", "Bad parameter", "deadline_s must be a number") from err
    if not 0 < value <= 600:
        raise Problem(400, "bad-parameter", "Bad parameter", "deadline_s must be in (0, 600]")
    return value


def position_reporter(session: Session, device: str, request_id: str) -> Any:
    def report(position: Position) -> None:
        session.hub.publish(
            "queue_position",
            device=device,
            request=request_id,
            ahead=position.ahead,
            estimated_wait_s=position.estimated_wait_s,
        )

    return report


def session_view(ctx: ApiContext, session: Session) -> dict[str, Any]:
    reg = ctx.sessions
    view: dict[str, Any] = {
        "id": session.id,
        "kind": session.kind,
        "created_at": session.created_at,
        "idle_timeout_s": reg.idle_timeout_s,
        "idle_remaining_s": round(max(0.0, reg.idle_timeout_s - session.idle_for()), 1),
        "jobs": len(session.jobs),
        "station": session.station,
    }
    if ctx.auth is not None and session.auth is not None:
        assurance = ctx.auth.assurance(session.auth).as_dict()
    else:
        assurance = {"level": "none", "factors": [], "categories": [], "subjects": []}
    view.update({"factors": assurance["factors"], "assurance": assurance})
    return view


@routes.post("/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await read_json(request, CreateSession, optional=True)
    try:
        station = ctx.stations.for_new_session(body.station, peer_uid(request))
    except StationRequired as err:
        raise Problem(422, "station-required", "Station required", str(err)) from err
    except UnknownStation as err:
        raise Problem(422, "unknown-station", "Unknown station", str(err), station=err.name) from err
    except StationForbidden as err:
        raise Problem(403, "station-not-allowed", "Station not allowed", str(err), station=err.name) from err
    session, token = ctx.sessions.create(body.kind, station.name)
    return json_response(
        {
            "id": session.id,
            "token": token,
            "kind": session.kind,
            "station": session.station,
            "idle_timeout_s": ctx.sessions.idle_timeout_s,
        },
        status=201,
        headers={"Location": f"/v1/sessions/{session.id}"},
    )


@routes.get("/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    session = session_of(request)
    return json_response(session_view(request.app[CONTEXT], session))


@routes.delete("/v1/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    session = session_of(request)
    await request.app[CONTEXT].sessions.end(session, "ended_by_client")
    return web.Response(status=204)


@routes.get("/v1/devices")
async def list_devices(request: web.Request) -> web.Response:
    return json_response({"devices": request.app[CONTEXT].stations.describe_devices()})


@routes.get("/v1/stations")
async def list_stations(request: web.Request) -> web.Response:
    return json_response({"stations": request.app[CONTEXT].station_overview()})


@routes.post("/v1/sessions/{session_id}/feedback")
async def feedback(request: web.Request) -> web.Response:
    """Citizen feedback once per session, also within a minute after it ended; no free text."""
    ctx = request.app[CONTEXT]
    session = session_of(request, recently_ended=True)
    body = await read_json(request, FeedbackBody)
    if session.feedback_given:
        raise Problem(409, "feedback-given", "Feedback already given", "one rating per session")
    queued = await ctx.cloud.send(
        "event",
        "feedback",
        {
            "session": session.id,
            "station": session.station,
            "rating": body.rating,
            "complaint": body.complaint,
            **({"category": body.category} if body.category else {}),
        },
    )
    session.feedback_given = True
    ctx.record_feedback(session.station, body.rating, body.complaint)
    return json_response({"accepted": True, "seq": queued.seq}, status=202)


# Printing -----------------------------------------------------------------------------------


def _print_job(body: PrintRequest) -> PrintJob:
    """The driver's job for this body; what the printer could not take is a 422 now, not a failed job."""
    from drivers.printer.errors import InvalidJob
    from drivers.printer.job import PrintJob, encode_job

    if not body.lines and not body.qr:
        raise Problem(422, "invalid-body", "Invalid body", "a receipt needs lines or a qr")
    try:
        job = PrintJob.of(body.lines, qr=body.qr, cut=body.cut)
        encode_job(job)
    except InvalidJob as err:
        raise Problem(422, "invalid-body", "Invalid body", str(err)) from err
    return job


async def _run_print(
    session: Session, managed: ManagedDevice, job: Job, payload: PrintJob, deadline: float
) -> None:
    printer = managed.capable(PRINTER)

    def on_position(position: Position) -> None:
        job.position = position.ahead
        job.estimated_wait_s = position.estimated_wait_s
        session.hub.publish("job_progress", job=job.id, state=job.state, **_pos(position))

    async def operation() -> Any:
        job.state = "printing"
        job.position = 0
        session.hub.publish("job_progress", job=job.id, state="printing")
        return await printer.print_job(payload, timeout=deadline)

    try:
        await managed.queue.submit(
            operation, session=session.id, deadline_s=deadline, on_position=on_position, label=job.id
        )
    except asyncio.CancelledError:
        job.state, job.error = "cancelled", "the session ended"
        job.finished_at = time.time()
        raise
    except Exception as err:
        # Deadline passed in the queue or at the printer: expired; withdrawn: cancelled.
        if isinstance(err, RequestCancelled):
            job.state = "cancelled"
        else:
            job.state = "expired" if isinstance(err, TimeoutError) else "failed"
        job.error = str(err)
        job.finished_at = time.time()
        session.hub.publish("job_failed", job=job.id, state=job.state, error=job.error)
    else:
        job.state = "done"
        job.finished_at = time.time()
        session.hub.publish("job_done", job=job.id)
    finally:
        job.position = None
        job.estimated_wait_s = None


def _pos(position: Position) -> dict[str, Any]:
    return {"ahead": position.ahead, "estimated_wait_s": position.estimated_wait_s}


@routes.post("/v1/sessions/{session_id}/print")
async def print_receipt(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    body = await read_json(request, PrintRequest)
    payload = _print_job(body)
    if body.document == "certificate":
        if session.auth is None:
            raise Problem(
                503, "not-ready", "Authentication unavailable", "the gateway is starting or stopping"
            )
        await ctx.auth.authorize("certificate_print", session.auth, online=ctx.is_online())
    managed = station_device(ctx, session, PRINTER.kind)
    managed.require_usable()
    deadline = deadline_of(request, managed)
    queue = managed.queue
    queue.check_capacity()  # answer 429 now: the job itself is queued after the 202
    job = Job(id=secrets.token_hex(6), kind="print")
    job.position = queue.queued
    job.estimated_wait_s = round(queue.estimate_wait(queue.queued), 3)
    session.jobs[job.id] = job
    if len(session.jobs) > 100:  # keep the newest; a kiosk session prints a handful
        for old in list(session.jobs)[:-100]:
            if session.jobs[old].finished_at is not None:
                del session.jobs[old]
    session.spawn(_run_print(session, managed, job, payload, deadline), name=f"print-{job.id}")
    return json_response(
        job.as_dict(),
        status=202,
        headers={"Location": f"/v1/sessions/{session.id}/jobs/{job.id}"},
    )


@routes.get("/v1/sessions/{session_id}/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    session = session_of(request)
    job = session.jobs.get(request.match_info["job_id"])
    if job is None:
        raise Problem(404, "job-not-found", "No such job", "no job with that id in this session")
    return json_response(job.as_dict())


# Device reads through the queue --------------------------------------------------------------


async def queued_device_call(
    request: web.Request,
    session: Session,
    capability: Capability[D],
    call: Callable[[D, float], Awaitable[R]],
    *,
    label: str,
) -> R:
    """Run `call(device, timeout)` on the station's device of that capability's kind, through its queue."""
    ctx = request.app[CONTEXT]
    managed = station_device(ctx, session, capability.kind)
    device = managed.capable(capability)
    managed.require_usable()
    deadline = deadline_of(request, managed)
    request_id = secrets.token_hex(4)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def operation() -> R:
        remaining = max(0.05, deadline - (loop.time() - started))
        return await call(device, remaining)

    return await managed.queue.submit(
        operation,
        session=session.id,
        deadline_s=deadline,
        on_position=position_reporter(session, managed.name, request_id),
        label=label,
    )


# Events --------------------------------------------------------------------------------------


@routes.get("/v1/sessions/{session_id}/events")
async def events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    sub = session.hub.subscribe()
    ctx.streams.add(sub)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await response.write(b": connected\nretry: 2000\n\n")
        heartbeat = ctx.config.api.sse_heartbeat_s
        while True:
            event = await sub.next(heartbeat)
            if event is not None:
                chunk = event.sse()
            elif sub.closed_reason is not None:
                data = msgspec.json.encode({"type": "stream_closed", "reason": sub.closed_reason})
                with contextlib.suppress(ConnectionError, TimeoutError):
                    async with asyncio.timeout(5):
                        await response.write(b"event: stream_closed\ndata: " + data + b"\n\n")
                break
            else:
                chunk = b": heartbeat\n\n"
            try:
                # A reader that does not drain its socket is dropped, not buffered for.
                async with asyncio.timeout(10):
                    await response.write(chunk)
            except TimeoutError:
                sub.close("slow_consumer: the client stopped reading")
                break
    except ConnectionError:
        pass
    finally:
        session.hub.unsubscribe(sub)
        ctx.streams.discard(sub)
    return response

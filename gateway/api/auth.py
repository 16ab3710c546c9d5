"""Factor routes (ID card, SS card, staff card, face, SMS code, TOTP, PIN) and protected operations."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from aiohttp import web

from gateway.api.app import CONTEXT, json_response, read_json
from gateway.api.context import ApiContext
from gateway.api.problems import Problem
from gateway.api.sessions import devices, queued_device_call, session_of
from gateway.auth.engine import Authenticator
from gateway.auth.factors import AuthState, ProvenFactor
from gateway.sessions import Session

routes = web.RouteTableDef()

MAX_SERVICE_BYTES = 64 * 1024


class CodeBody(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    staff_id: str | None = None


class PinBody(msgspec.Struct, forbid_unknown_fields=True):
    pin: str
    staff_id: str | None = None


class TransactionBody(msgspec.Struct, forbid_unknown_fields=True):
    service: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def engine(ctx: ApiContext) -> Authenticator:
    auth = ctx.services.get("auth")
    if auth is None:
        raise Problem(503, "not-ready", "Authentication unavailable", "the gateway is starting or stopping")
    assert isinstance(auth, Authenticator)
    return auth


def state_of(session: Session) -> AuthState:
    assert isinstance(session.auth, AuthState)
    return session.auth


def online(ctx: ApiContext) -> bool:
    check = ctx.services.get("is_online")
    return bool(check()) if check is not None else False


def proven(ctx: ApiContext, session: Session, factor: ProvenFactor) -> web.Response:
    state = state_of(session)
    assurance = engine(ctx).assurance(state).as_dict()
    session.hub.publish("factor_proven", factor=factor.kind, level=assurance["level"])
    return json_response({"factor": factor.as_dict(), "assurance": assurance})


@routes.post("/v1/sessions/{session_id}/factors/idcard")
async def factor_idcard(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)

    async def read(device: Any, remaining: float) -> Any:
        return await device.read_card(timeout=remaining)

    card = await queued_device_call(request, session, "idcard", read, label="idcard")
    factor = await engine(ctx).prove_idcard(
        state_of(session), card.id_number, photo=card.photo, valid_until=card.valid_to
    )
    return proven(ctx, session, factor)


@routes.post("/v1/sessions/{session_id}/factors/sscard")
async def factor_sscard(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)

    async def read(device: Any, remaining: float) -> Any:
        return await device.read_social_security(timeout=remaining)

    card = await queued_device_call(request, session, "cardreader", read, label="sscard")
    factor = await engine(ctx).prove_sscard(state_of(session), card.id_number)
    return proven(ctx, session, factor)


@routes.post("/v1/sessions/{session_id}/factors/staffcard")
async def factor_staffcard(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)

    async def read(device: Any, remaining: float) -> Any:
        return await device.read_card_id(timeout=remaining)

    card_id = await queued_device_call(request, session, "cardreader", read, label="staffcard")
    factor = await engine(ctx).prove_staffcard(state_of(session), card_id)
    return proven(ctx, session, factor)


async def capture_frame(request: web.Request, session: Session) -> Any:
    async def capture(device: Any, remaining: float) -> Any:
        return await device.capture(timeout=remaining)

    return await queued_device_call(request, session, "camera", capture, label="capture")


@routes.post("/v1/sessions/{session_id}/factors/face")
async def factor_face(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    state = state_of(session)
    if state.idcard is None:
        # Fail before using the camera: the face is compared with this session's ID card photo.
        raise Problem(
            409, "idcard-required", "ID card first", "read the ID card in this session before the face"
        )
    frame = await capture_frame(request, session)
    factor = await engine(ctx).prove_face(state, frame.jpeg)
    return proven(ctx, session, factor)


@routes.post("/v1/sessions/{session_id}/factors/otp/challenge")
async def otp_challenge(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    answer = await engine(ctx).otp_challenge(state_of(session))
    return json_response(answer, status=202)


@routes.post("/v1/sessions/{session_id}/factors/otp")
async def factor_otp(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    body = await read_json(request, CodeBody)
    factor = await engine(ctx).prove_otp(state_of(session), body.code)
    return proven(ctx, session, factor)


@routes.post("/v1/sessions/{session_id}/factors/totp")
async def factor_totp(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    body = await read_json(request, CodeBody)
    factor = await engine(ctx).prove_totp(state_of(session), body.staff_id, body.code)
    return proven(ctx, session, factor)


@routes.post("/v1/sessions/{session_id}/factors/pin")
async def factor_pin(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    body = await read_json(request, PinBody)
    factor = await engine(ctx).prove_pin(state_of(session), body.staff_id, body.pin)
    return proven(ctx, session, factor)


# Protected operations --------------------------------------------------------------------------


@routes.post("/v1/sessions/{session_id}/transactions")
async def transaction(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    body = await read_json(request, TransactionBody)
    if not body.service or len(body.service) > 128:
        raise Problem(422, "invalid-body", "Invalid body", "service must be 1..128 characters")
    if len(msgspec.json.encode(body.data)) > MAX_SERVICE_BYTES:
        raise Problem(422, "invalid-body", "Invalid body", f"data must be under {MAX_SERVICE_BYTES} bytes")
    state = state_of(session)
    decision = await engine(ctx).authorize("transaction", state, online=online(ctx))
    if ctx.cloud is None:
        raise Problem(503, "not-ready", "Uplink unavailable", "the gateway is starting or stopping")
    tx_id = secrets.token_hex(12)
    holder = state.idcard or state.sscard
    queued = await ctx.cloud.send(
        "tx",
        "transaction",
        {
            "id": tx_id,
            "session": session.id,
            "service": body.service,
            "data": body.data,
            "factors": [f.kind for f in decision.used],
            # The cloud needs whose request this is; it travels only inside the tx envelope.
            **({"id_number": holder.id_number} if holder is not None else {}),
        },
    )
    session.hub.publish("transaction_queued", id=tx_id, seq=queued.seq)
    return json_response({"id": tx_id, "seq": queued.seq, "state": queued.state}, status=202)


def _technician(ctx: ApiContext, session: Session) -> None:
    if session.kind != "technician":
        raise Problem(
            403, "technician-only", "Technician session required", "maintenance needs a technician session"
        )


@routes.post("/v1/sessions/{session_id}/maintenance/devices/{device}/reset")
async def maintenance_reset(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    _technician(ctx, session)
    await engine(ctx).authorize("maintenance", state_of(session), online=online(ctx))
    reset = ctx.services.get("reset_device")
    if reset is None:
        raise Problem(503, "not-ready", "Unavailable", "the gateway is starting or stopping")
    result = await reset(request.match_info["device"])
    return json_response(result)


@routes.post("/v1/sessions/{session_id}/maintenance/devices/{device}/purge")
async def maintenance_purge(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    _technician(ctx, session)
    await engine(ctx).authorize("maintenance", state_of(session), online=online(ctx))
    name = request.match_info["device"]
    managed = devices(ctx).devices.get(name)
    if managed is None:
        raise Problem(404, "device-not-found", "No such device", f"no device named {name!r}")
    purged = managed.queue.purge()
    return json_response({"device": name, "purged": purged})


@routes.post("/v1/sessions/{session_id}/camera/capture")
async def camera_capture(request: web.Request) -> web.Response:
    session = session_of(request)
    frame = await capture_frame(request, session)
    return web.Response(
        body=frame.jpeg,
        content_type="image/jpeg",
        headers={"X-Frame-Width": str(frame.width), "X-Frame-Height": str(frame.height)},
    )

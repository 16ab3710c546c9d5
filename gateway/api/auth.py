"""Factor routes (ID card, SS card, staff card, face, SMS code, TOTP, PIN) and protected operations."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from gateway.api.app import CONTEXT, json_response, read_json
from gateway.api.context import ApiContext
from gateway.api.problems import Problem
from gateway.api.sessions import queued_device_call, session_of
from gateway.auth.factors import AuthState, ProvenFactor
from gateway.auth.settings import StaffId
from gateway.drivers_registry.capabilities import (
    CAMERA,
    CARD_READER,
    IDCARD_READER,
    Camera,
    CardReader,
    IdCardReader,
)
from gateway.sessions import Session

if TYPE_CHECKING:
    from drivers.camera.jpeg import Frame
    from drivers.cardreader.records import SocialSecurityCard
    from drivers.idcard.card_types import IdDocument

routes = web.RouteTableDef()

MAX_SERVICE_BYTES = 64 * 1024


class CodeBody(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(max_length=64)]
    staff_id: StaffId | None = None


class PinBody(msgspec.Struct, forbid_unknown_fields=True):
    pin: Annotated[str, msgspec.Meta(max_length=64)]
    staff_id: StaffId | None = None


class TransactionBody(msgspec.Struct, forbid_unknown_fields=True):
    service: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def state_of(session: Session) -> AuthState:
    assert isinstance(session.auth, AuthState)
    return session.auth


def proven(ctx: ApiContext, session: Session, factor: ProvenFactor) -> web.Response:
    state = state_of(session)
    assurance = ctx.auth.assurance(state).as_dict()
    session.hub.publish("factor_proven", factor=factor.kind, level=assurance["level"])
    return json_response({"factor": factor.as_dict(), "assurance": assurance})


async def _prove_idcard(request: web.Request, session: Session, ctx: ApiContext) -> ProvenFactor:
    async def read(reader: IdCardReader, remaining: float) -> IdDocument:
        return await reader.read_card(timeout=remaining)

    card = await queued_device_call(request, session, IDCARD_READER, read, label="idcard")
    return await ctx.auth.prove_idcard(
        state_of(session),
        card.document_number,
        photo=card.photo,
        valid_until=card.valid_to,
        document_type=card.document_type,
    )


async def _prove_sscard(request: web.Request, session: Session, ctx: ApiContext) -> ProvenFactor:
    async def read(reader: CardReader, remaining: float) -> SocialSecurityCard:
        return await reader.read_social_security(timeout=remaining)

    card = await queued_device_call(request, session, CARD_READER, read, label="sscard")
    return await ctx.auth.prove_sscard(state_of(session), card.id_number)


async def _prove_staffcard(request: web.Request, session: Session, ctx: ApiContext) -> ProvenFactor:
    async def read(reader: CardReader, remaining: float) -> str:
        return await reader.read_card_id(timeout=remaining)

    card_id = await queued_device_call(request, session, CARD_READER, read, label="staffcard")
    return await ctx.auth.prove_staffcard(state_of(session), card_id)


# factor -> how to read its card on the station's device (through the queue) and prove what was read
CARD_FACTORS: dict[str, Callable[[web.Request, Session, ApiContext], Awaitable[ProvenFactor]]] = {
    "idcard": _prove_idcard,
    "sscard": _prove_sscard,
    "staffcard": _prove_staffcard,
}


async def card_factor(request: web.Request) -> web.Response:
    """Read the card on its device (through the queue, within the deadline) and prove the factor."""
    ctx = request.app[CONTEXT]
    session = session_of(request)
    prove = CARD_FACTORS[request.path.rsplit("/", 1)[-1]]
    factor = await prove(request, session, ctx)
    return proven(ctx, session, factor)


for _kind in CARD_FACTORS:
    routes.post(f"/v1/sessions/{{session_id}}/factors/{_kind}")(card_factor)


async def capture_frame(request: web.Request, session: Session) -> Frame:
    async def capture(camera: Camera, remaining: float) -> Frame:
        return await camera.capture(timeout=remaining)

    return await queued_device_call(request, session, CAMERA, capture, label="capture")


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
    factor = await ctx.auth.prove_face(state, frame.jpeg)
    return proven(ctx, session, factor)


@routes.post("/v1/sessions/{session_id}/factors/otp/challenge")
async def otp_challenge(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session = session_of(request)
    answer = await ctx.auth.otp_challenge(state_of(session))
    return json_response(answer, status=202)


async def code_factor(request: web.Request) -> web.Response:
    """A typed-in code: SMS one-time code, TOTP, or a staff PIN."""
    ctx = request.app[CONTEXT]
    session = session_of(request)
    auth, state = ctx.auth, state_of(session)
    kind = request.path.rsplit("/", 1)[-1]
    if kind == "pin":
        pin = await read_json(request, PinBody)
        factor = await auth.prove_pin(state, pin.staff_id, pin.pin)
    else:
        body = await read_json(request, CodeBody)
        if kind == "otp":
            factor = await auth.prove_otp(state, body.code)
        else:
            factor = await auth.prove_totp(state, body.staff_id, body.code)
    return proven(ctx, session, factor)


for _kind in ("otp", "totp", "pin"):
    routes.post(f"/v1/sessions/{{session_id}}/factors/{_kind}")(code_factor)


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
    decision = await ctx.auth.authorize("transaction", state, online=ctx.is_online())
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
    session.transactions += 1
    session.hub.publish("transaction_queued", id=tx_id, seq=queued.seq)
    return json_response({"id": tx_id, "seq": queued.seq, "state": queued.state}, status=202)


async def _maintenance(request: web.Request) -> ApiContext:
    """The gate of every maintenance route: a technician session whose factors meet the policy."""
    ctx = request.app[CONTEXT]
    session = session_of(request)
    if session.kind != "technician":
        raise Problem(
            403, "technician-only", "Technician session required", "maintenance needs a technician session"
        )
    await ctx.auth.authorize("maintenance", state_of(session), online=ctx.is_online())
    return ctx


@routes.post("/v1/sessions/{session_id}/maintenance/devices/{device}/reset")
async def maintenance_reset(request: web.Request) -> web.Response:
    ctx = await _maintenance(request)
    result = await ctx.reset_device(request.match_info["device"])
    return json_response(result)


@routes.post("/v1/sessions/{session_id}/maintenance/devices/{device}/purge")
async def maintenance_purge(request: web.Request) -> web.Response:
    ctx = await _maintenance(request)
    name = request.match_info["device"]
    purged = ctx.devices.named(name).queue.purge()
    return json_response({"device": name, "purged": purged})


Seqs = Annotated[list[Annotated[int, msgspec.Meta(gt=0)]], msgspec.Meta(min_length=1, max_length=10_000)]


class RequeueBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    stream: str | None = None
    seqs: Seqs | None = None


@routes.post("/v1/sessions/{session_id}/maintenance/outbox/requeue")
async def maintenance_requeue(request: web.Request) -> web.Response:
    """Messages the broker rejected go back in the queue, once ops fixed the cause."""
    ctx = await _maintenance(request)
    body = await read_json(request, RequeueBody, optional=True)
    try:
        result = await ctx.requeue_rejected(msgspec.to_builtins(body))
    except ValueError as err:
        raise Problem(422, "invalid-body", "Invalid body", str(err)) from err
    return json_response(result)


@routes.post("/v1/sessions/{session_id}/camera/capture")
async def camera_capture(request: web.Request) -> web.Response:
    session = session_of(request)
    frame = await capture_frame(request, session)
    return web.Response(
        body=frame.jpeg,
        content_type="image/jpeg",
        headers={"X-Frame-Width": str(frame.width), "X-Frame-Height": str(frame.height)},
    )

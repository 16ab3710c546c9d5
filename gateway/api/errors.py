"""Map domain errors (sessions, queues, drivers) to problem+json with the right status."""

from __future__ import annotations

from drivers.base import (
    DeviceRejected,
    DeviceTimeout,
    DeviceUnavailable,
    DriverError,
    FrameError,
    UserActionNeeded,
)
from drivers.idcard.errors import UnsupportedCard
from gateway.api.problems import Problem, retry_after
from gateway.auth.errors import AuthError
from gateway.devices import NoSuchDevice, UnknownDevice
from gateway.queueing import DeadlineExpired, QueueFull, RequestCancelled
from gateway.sessions import SessionNotFound, SessionsFull, Unauthenticated
from gateway.uplink.outbox import OutboxError, OutboxFull


def to_problem(err: Exception) -> Problem | None:
    """The problem for a known error, or None to let it be a 500."""
    if isinstance(err, Problem):
        return err
    if isinstance(err, AuthError):
        fields = err.fields()
        headers = retry_after(fields["retry_after_s"]) if fields.get("retry_after_s") else None
        titles = {
            401: "Factor not proven",
            403: "Not allowed",
            429: "Too many attempts",
            503: "Factor unavailable",
        }
        return Problem(
            err.status,
            err.code.replace("_", "-"),
            titles.get(err.status, "Authentication error"),
            str(err),
            headers=headers,
            **fields,
        )
    if isinstance(err, OutboxFull):
        return Problem(
            507,
            "outbox-full",
            "Cannot store the message",
            f"{err}: the message was not accepted; nothing was queued",
            stream=err.stream,
        )
    if isinstance(err, OutboxError):
        return Problem(503, "storage-unavailable", "Storage unavailable", str(err))
    if isinstance(err, Unauthenticated):
        return Problem(
            401,
            "unauthenticated",
            "Authentication required",
            str(err),
            headers={"WWW-Authenticate": 'Bearer realm="edge-gateway"'},
        )
    if isinstance(err, SessionNotFound):
        return Problem(404, "session-not-found", "No such session", str(err))
    if isinstance(err, SessionsFull):
        return Problem(
            503,
            "sessions-full",
            "All sessions are in use",
            str(err),
            headers=retry_after(err.retry_after),
            limit=err.limit,
        )
    if isinstance(err, QueueFull):
        return Problem(
            429,
            "queue-full",
            "Device queue is full",
            str(err),
            headers=retry_after(err.retry_after),
            device=err.device,
            retry_after_s=round(err.retry_after, 2),
        )
    if isinstance(err, DeadlineExpired):
        return Problem(504, "deadline-expired", "Deadline expired", str(err), device=err.device)
    if isinstance(err, RequestCancelled):
        return Problem(409, "request-cancelled", "Request cancelled", str(err), device=err.device)
    if isinstance(err, UnknownDevice):
        return Problem(404, "device-not-found", "No such device", str(err), device=err.name)
    if isinstance(err, NoSuchDevice):
        return Problem(
            503,
            "device-not-configured",
            "Device not configured",
            str(err),
            device_kind=err.kind,
            state="not_configured",
        )
    if isinstance(err, DeviceUnavailable):
        return Problem(
            503,
            "device-unavailable",
            "Device unavailable",
            str(err),
            device=err.device,
            state=err.state.value,
        )
    if isinstance(err, DeviceTimeout):
        return Problem(504, "device-timeout", "Device did not answer in time", str(err), device=err.device)
    if isinstance(err, UnsupportedCard):
        # Its own kind: the citizen presented a document this reader cannot be used with.
        problem = Problem(
            409, "unsupported-card-type", "Unsupported card type", str(err), device=err.device, code=err.code
        )
        if err.card_type:
            problem.extensions["card_type"] = err.card_type
        return problem
    if isinstance(err, UserActionNeeded):
        return Problem(409, "user-action-needed", "The device needs the user", str(err), device=err.device)
    if isinstance(err, DeviceRejected):
        return Problem(
            502,
            "device-error",
            "The device reported an error",
            str(err),
            device=err.device,
            code=str(err.code),
        )
    if isinstance(err, FrameError | DriverError):
        return Problem(502, "device-error", "Device error", str(err), device=err.device)
    return None

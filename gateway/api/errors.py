"""Which problem+json each domain error answers with: a table keyed by error class, found by MRO."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

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

E = TypeVar("E", bound=BaseException)


def _no_fields(_err: BaseException) -> dict[str, Any]:
    return {}


def _no_headers(_err: BaseException) -> Mapping[str, str] | None:
    return None


class _OnDevice(Protocol):
    @property
    def device(self) -> str | None: ...


def _device(err: _OnDevice) -> dict[str, Any]:
    return {"device": err.device}


@dataclass(frozen=True, slots=True)
class Answer(Generic[E]):
    """How one error class answers: status, kind, title, and the detail, fields and headers it adds."""

    status: int
    kind: str
    title: str
    fields: Callable[[E], Mapping[str, Any]] = _no_fields
    headers: Callable[[E], Mapping[str, str] | None] = _no_headers
    detail: Callable[[E], str] = str

    def problem(self, err: E) -> Problem:
        """The problem this answer gives for `err`."""
        return Problem(
            self.status,
            self.kind,
            self.title,
            self.detail(err),
            headers=self.headers(err),
            **self.fields(err),
        )


# The auth errors carry their own `status` and `code` (gateway/auth/errors.py): their answer is
# derived from the error, so a new subclass needs no line here.
AUTH_TITLES = {
    401: "Factor not proven",
    403: "Not allowed",
    429: "Too many attempts",
    503: "Factor unavailable",
}


def _auth_headers(err: AuthError) -> Mapping[str, str] | None:
    wait = err.fields().get("retry_after_s")
    return retry_after(wait) if wait else None


def _auth_fields(err: AuthError) -> dict[str, Any]:
    return err.fields()


def _auth_answer(err: AuthError) -> Answer[AuthError]:
    title = AUTH_TITLES.get(err.status, "Authentication error")
    return Answer(err.status, err.code.replace("_", "-"), title, _auth_fields, _auth_headers)


def _card_fields(err: UnsupportedCard) -> dict[str, Any]:
    # Its own kind: the citizen presented a document this reader cannot be used with.
    fields: dict[str, Any] = {"device": err.device, "code": err.code}
    if err.card_type:
        fields["card_type"] = err.card_type
    return fields


ANSWERS: dict[type[BaseException], Answer[Any] | Callable[[Any], Answer[Any]]] = {}


def register(cls: type[E], answer: Answer[E] | Callable[[E], Answer[E]]) -> None:
    """Make `cls` and its subclasses without an entry of their own answer with `answer`.

    `answer` is either fixed or, for a family whose errors carry their status, derived from the error.
    """
    ANSWERS[cls] = answer


register(AuthError, _auth_answer)
register(
    OutboxFull,
    Answer(
        507,
        "outbox-full",
        "Cannot store the message",
        lambda e: {"stream": e.stream},
        detail=lambda e: f"{e}: the message was not accepted; nothing was queued",
    ),
)
register(OutboxError, Answer(503, "storage-unavailable", "Storage unavailable"))
register(
    Unauthenticated,
    Answer(
        401,
        "unauthenticated",
        "Authentication required",
        headers=lambda e: {"WWW-Authenticate": 'Bearer realm="edge-gateway"'},
    ),
)
register(SessionNotFound, Answer(404, "session-not-found", "No such session"))
register(
    SessionsFull,
    Answer(
        503,
        "sessions-full",
        "All sessions are in use",
        lambda e: {"limit": e.limit},
        lambda e: retry_after(e.retry_after),
    ),
)
register(
    QueueFull,
    Answer(
        429,
        "queue-full",
        "Device queue is full",
        lambda e: {"device": e.device, "retry_after_s": round(e.retry_after, 2)},
        lambda e: retry_after(e.retry_after),
    ),
)
register(DeadlineExpired, Answer(504, "deadline-expired", "Deadline expired", _device))
register(RequestCancelled, Answer(409, "request-cancelled", "Request cancelled", _device))
register(UnknownDevice, Answer(404, "device-not-found", "No such device", lambda e: {"device": e.name}))
register(
    NoSuchDevice,
    Answer(
        503,
        "device-not-configured",
        "Device not configured",
        lambda e: {"device_kind": e.kind, "state": "not_configured"},
    ),
)
# Driver errors are mapped here, never in drivers/ (drivers do not import the gateway).
register(
    DeviceUnavailable,
    Answer(
        503,
        "device-unavailable",
        "Device unavailable",
        lambda e: {"device": e.device, "state": e.state.value},
    ),
)
register(DeviceTimeout, Answer(504, "device-timeout", "Device did not answer in time", _device))
register(UnsupportedCard, Answer(409, "unsupported-card-type", "Unsupported card type", _card_fields))
register(UserActionNeeded, Answer(409, "user-action-needed", "The device needs the user", _device))
register(
    DeviceRejected,
    Answer(
        502,
        "device-error",
        "The device reported an error",
        lambda e: {"device": e.device, "code": str(e.code)},
    ),
)
register(FrameError, Answer(502, "device-error", "Device error", _device))
register(DriverError, Answer(502, "device-error", "Device error", _device))


def answer_for(err: BaseException) -> Answer[Any] | None:
    """The answer of the nearest class in `err`'s MRO that has one, or None."""
    for cls in type(err).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            return answer if isinstance(answer, Answer) else answer(err)
    return None


def to_problem(err: Exception) -> Problem | None:
    """The problem for a known error, or None to let it be a 500."""
    if isinstance(err, Problem):
        return err
    answer = answer_for(err)
    return None if answer is None else answer.problem(err)

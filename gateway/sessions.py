"""Kiosk sessions: creation with a bearer token, lookup in constant time, idle warning and timeout.

A session waiting on a device (its ID card read, its print job, queued or in flight) is not idle:
busy probes (the daemon asks the device queues) keep it alive, and its idle time starts again
when the request ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from gateway.errors import GatewayError
from gateway.events import EventHub
from gateway.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

SessionKind = Literal["citizen", "technician"]
# Feedback is accepted this long after a session ended ("scan to rate" on the way out).
FEEDBACK_GRACE_S = 60.0
# Bound on ended sessions remembered for feedback (a flood of short sessions cannot grow memory).
RECENTLY_ENDED_MAX = 2000
EndHook = Callable[["Session", str], Awaitable[None] | None]


class SessionError(GatewayError):
    """Root of session errors."""


class SessionsFull(SessionError):
    """All `api.max_sessions` slots are taken."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"all {limit} sessions are in use")
        self.limit = limit
        self.retry_after = retry_after


class SessionNotFound(SessionError):
    """No session with that id for that token (deliberately not saying which part is wrong)."""


class Unauthenticated(SessionError):
    """No bearer token on a session call."""


@dataclass
class Job:
    """A print job (or other deferred device work) as the API reports it."""

    id: str
    kind: str
    state: str = "queued"
    position: int | None = None
    estimated_wait_s: float | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "kind": self.kind,
            "state": self.state,
            "position": self.position,
            "estimated_wait_s": self.estimated_wait_s,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            **({"result": self.result} if self.result else {}),
        }


@dataclass(eq=False)
class Session:
    """One kiosk user's session."""

    id: str
    token_digest: bytes
    kind: SessionKind
    hub: EventHub
    created_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.monotonic)
    warned: bool = False
    ended: str | None = None
    # Requests of this session that failed on the gateway's side (5xx): the yellow alert's input.
    errors: int = 0
    jobs: dict[str, Job] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Auth state (factors held) lives here; the auth layer owns its type.
    auth: Any = None
    # The station (kiosk) this session belongs to: its device routes use that station's devices.
    station: str = "default"
    # Citizen feedback is taken once per session (also shortly after it ended).
    feedback_given: bool = False
    # For the centre's figures: whether a device did work for it, and transactions it sent.
    used: bool = False
    transactions: int = 0
    ended_at: float | None = None

    def touch(self) -> None:
        self.last_activity = time.monotonic()
        self.warned = False

    def idle_for(self) -> float:
        return time.monotonic() - self.last_activity

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Background work owned by the session; cancelled when it ends."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionRegistry:
    """All live sessions; ends them on request, on idle timeout, or at shutdown."""

    def __init__(
        self,
        *,
        max_sessions: int,
        idle_timeout_s: float,
        idle_warning_s: float,
        event_buffer: int,
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.idle_warning_s = idle_warning_s
        self.event_buffer = event_buffer
        self._sessions: dict[str, Session] = {}
        # Ended sessions kept for FEEDBACK_GRACE_S, in end order (oldest first), for late feedback.
        self._recently_ended: dict[str, Session] = {}
        self._end_hooks: list[EndHook] = []
        self._create_hooks: list[Callable[[Session], None]] = []
        self._busy_probes: list[Callable[[Session], bool]] = []
        self._reaper: asyncio.Task[None] | None = None
        self.created_total = 0
        self.ended_total: dict[str, int] = {}

    def on_end(self, hook: EndHook) -> None:
        self._end_hooks.append(hook)

    def add_busy_probe(self, probe: Callable[[Session], bool]) -> None:
        """`probe(session)` is True while the session has device work pending: not idle then."""
        self._busy_probes.append(probe)

    def busy(self, session: Session) -> bool:
        for probe in self._busy_probes:
            try:
                if probe(session):
                    return True
            except Exception:
                log.exception("session_busy_probe_failed", session=session.id)
        return False

    def on_create(self, hook: Callable[[Session], None]) -> None:
        """Run for every new session before it is handed out (e.g. to give it auth state)."""
        self._create_hooks.append(hook)

    def configure(self, *, max_sessions: int, idle_timeout_s: float, idle_warning_s: float) -> None:
        """Live reload of limits."""
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.idle_warning_s = idle_warning_s

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    def create(self, kind: SessionKind = "citizen", station: str = "default") -> tuple[Session, str]:
        if len(self._sessions) >= self.max_sessions:
            oldest_idle = max((s.idle_for() for s in self._sessions.values()), default=0.0)
            raise SessionsFull(self.max_sessions, max(1.0, self.idle_timeout_s - oldest_idle))
        token = secrets.token_urlsafe(32)  # 256 bits
        session = Session(
            id=secrets.token_hex(8),
            token_digest=_digest(token),
            kind=kind,
            hub=EventHub(self.event_buffer),
            station=station,
        )
        for hook in self._create_hooks:
            hook(session)
        self._sessions[session.id] = session
        self.created_total += 1
        log.info("session_created", session=session.id, kind=kind, station=station, open=len(self._sessions))
        return session, token

    def authenticate(self, session_id: str, authorization: str | None) -> Session:
        """The session named by the path, if the bearer token is its own; touches it."""
        session = self._check_token(self._sessions.get(session_id), authorization)
        session.touch()
        return session

    def authenticate_recent(self, session_id: str, authorization: str | None) -> Session:
        """Like `authenticate`, but also a session that ended within `FEEDBACK_GRACE_S` (feedback)."""
        self._forget_old_ended()
        session = self._sessions.get(session_id) or self._recently_ended.get(session_id)
        return self._check_token(session, authorization)

    def _check_token(self, session: Session | None, authorization: str | None) -> Session:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("send Authorization: Bearer <token> from POST /v1/sessions")
        digest = _digest(authorization[7:].strip())
        # Compare even when the id is unknown, so timing does not tell ids from tokens.
        expected = session.token_digest if session is not None else b"\0" * 32
        if not hmac.compare_digest(expected, digest) or session is None:
            raise SessionNotFound("no such session for this token")
        return session

    def _forget_old_ended(self) -> None:
        cutoff = time.monotonic() - FEEDBACK_GRACE_S
        while self._recently_ended:
            oldest = next(iter(self._recently_ended.values()))
            if oldest.ended_at is not None and oldest.ended_at > cutoff:
                break
            del self._recently_ended[oldest.id]

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def end(self, session: Session, reason: str) -> None:
        """End a session: cancel its device work and tasks, tell its listeners, forget it."""
        if session.ended is not None:
            return
        session.ended = reason
        session.ended_at = time.monotonic()
        self._sessions.pop(session.id, None)
        self._forget_old_ended()
        if len(self._recently_ended) < RECENTLY_ENDED_MAX:
            self._recently_ended[session.id] = session
        self.ended_total[reason] = self.ended_total.get(reason, 0) + 1
        for hook in self._end_hooks:
            try:
                result = hook(session, reason)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("session_end_hook_failed", session=session.id)
        for task in list(session.tasks):
            task.cancel()
        if session.tasks:
            await asyncio.gather(*session.tasks, return_exceptions=True)
        session.hub.publish("session_ended", reason=reason)
        session.hub.close(f"session ended: {reason}")
        log.info("session_ended", session=session.id, reason=reason, open=len(self._sessions))

    async def end_all(self, reason: str) -> int:
        sessions = list(self._sessions.values())
        for session in sessions:
            await self.end(session, reason)
        return len(sessions)

    # Idle handling ------------------------------------------------------------------------

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="session-reaper")

    async def close(self) -> None:
        reaper, self._reaper = self._reaper, None
        await cancel_and_wait(reaper)
        await self.end_all("shutdown")

    def _tick_interval(self) -> float:
        return max(0.05, min(1.0, self.idle_timeout_s / 20))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval())
            await self.check_idle()

    async def check_idle(self) -> None:
        warn_at = self.idle_timeout_s - self.idle_warning_s
        for session in list(self._sessions.values()):
            if session.ended is None and self.busy(session):
                session.touch()  # a pending device request is activity
                continue
            idle = session.idle_for()
            if idle >= self.idle_timeout_s:
                await self.end(session, "idle")
            elif idle >= warn_at and not session.warned and self.idle_warning_s > 0:
                session.warned = True
                session.hub.publish("idle_warning", ends_in_s=round(self.idle_timeout_s - idle, 1))

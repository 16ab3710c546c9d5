"""Stream tickets: single-use, short-lived stand-ins for the bearer token on an EventSource URL."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from gateway.api.problems import Problem, retry_after

TICKET_TTL_S = 30.0
MAX_TICKETS = 1000
PER_SESSION = 4  # a session's older tickets give way to its newer ones


@dataclass
class _Ticket:
    session: str
    token: str
    expires: float


class StreamTickets:
    """Single-use, short-lived tickets standing in for the bearer token on an EventSource URL."""

    def __init__(self, *, ttl_s: float = TICKET_TTL_S, limit: int = MAX_TICKETS) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._tickets: dict[str, _Ticket] = {}

    def mint(self, session: str, token: str) -> str:
        now = time.monotonic()
        for key in [k for k, t in self._tickets.items() if t.expires <= now]:
            del self._tickets[key]
        mine = [k for k, t in self._tickets.items() if t.session == session]
        for key in mine[: max(0, len(mine) - PER_SESSION + 1)]:
            del self._tickets[key]
        if len(self._tickets) >= self.limit:
            raise Problem(
                429,
                "too-many-tickets",
                "Too many tickets",
                "redeem or let some expire first",
                headers=retry_after(self.ttl_s),
            )
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = _Ticket(session, token, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str, session: str) -> str | None:
        """The session's token for a valid ticket of that session; the ticket is gone either way."""
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry.session != session or entry.expires <= time.monotonic():
            return None
        return entry.token

    def __len__(self) -> int:
        return len(self._tickets)

"""Request/response with the cloud over the signed uplink: a request goes up, a signed `reply` comes down."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gateway.auth.errors import Offline
from gateway.cloud import CloudSink

log = structlog.get_logger(__name__)

# Requests may carry an ID number (an SMS code is asked for the ID number read at the kiosk), and
# personal data travels only inside `tx` envelopes.
REQUEST_STREAM = "tx"


class CloudRequests:
    """Correlates `reply` commands with the requests that asked for them."""

    def __init__(self, sink: CloudSink, *, is_online: Callable[[], bool]) -> None:
        self._sink = sink
        self._is_online = is_online
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @property
    def pending(self) -> int:
        return len(self._waiting)

    async def request(self, type: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Send `type` with `body` and wait for the cloud's answer; Offline at once when the link is down."""
        if not self._is_online():
            raise Offline("the uplink is down")
        request_id = secrets.token_hex(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self._sink.send(REQUEST_STREAM, f"request.{type}", {"id": request_id, **body})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as err:
            raise Offline(f"no answer from the cloud within {timeout:.0f}s") from err
        finally:
            self._waiting.pop(request_id, None)

    def resolve(self, body: Mapping[str, Any]) -> bool:
        """Hand a verified `reply` command's body to its waiting request; False if none waits."""
        request_id = body.get("id")
        result = body.get("result")
        future = self._waiting.get(request_id) if isinstance(request_id, str) else None
        if future is None or future.done() or not isinstance(result, dict):
            return False
        future.set_result(result)
        return True

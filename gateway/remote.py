"""Downlink commands: verify (signature, node, expiry, replay), run, answer on the `event` stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from gateway.cloud import CloudSink
from gateway.errors import GatewayError
from gateway.uplink.commands import Command, CommandRejected, CommandVerifier

log = structlog.get_logger(__name__)

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class CommandFailed(Exception):
    """A verified command that could not be carried out; the message goes back in the result."""


class CommandDispatcher:
    """Runs verified commands by name; a rejected command changes nothing and raises an alert."""

    def __init__(self, verifier: CommandVerifier, sink: CloudSink) -> None:
        self._verifier = verifier
        self._sink = sink
        self._handlers: dict[str, Handler] = {}
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def register(self, name: str, handler: Handler) -> None:
        self._handlers[name] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def on_message(self, topic: str, payload: bytes) -> None:
        """The MQTT link's callback for `edge/{node}/down/#`."""
        # One at a time: the replay check and the effect of a command are ordered.
        async with self._lock:
            await self._handle(topic, payload)

    async def _handle(self, topic: str, payload: bytes) -> None:
        try:
            command = await asyncio.to_thread(self._verifier.verify, payload)
        except CommandRejected as err:
            self.rejected[err.kind] = self.rejected.get(err.kind, 0) + 1
            log.warning("command_rejected", topic=topic, kind=err.kind, reason=err.reason)
            await self._sink.send(
                "alert",
                "command_rejected",
                {
                    "severity": "blue",
                    "kind": err.kind,
                    "reason": err.reason,
                    "id": err.command_id,
                    "topic": topic,
                },
            )
            return
        topic_name = topic.rsplit("/", 1)[-1]
        if topic_name != command.type:
            log.warning("command_topic_mismatch", topic=topic, type=command.type)
        self.accepted += 1
        result = await self._run(command)
        await self._sink.send("event", "command_result", result)

    async def _run(self, command: Command) -> dict[str, Any]:
        handler = self._handlers.get(command.type)
        started = time.monotonic()
        if handler is None:
            return {"id": command.id, "ok": False, "error": f"unknown command {command.type!r}"}
        try:
            outcome = await handler(command.body)
        except (CommandFailed, GatewayError) as err:
            log.warning("command_failed", id=command.id, type=command.type, error=str(err))
            return {"id": command.id, "ok": False, "error": str(err)}
        except Exception as err:
            log.exception("command_crashed", id=command.id, type=command.type)
            return {"id": command.id, "ok": False, "error": f"internal error: {type(err).__name__}"}
        log.info(
            "command_done", id=command.id, type=command.type, ms=round((time.monotonic() - started) * 1000)
        )
        return {"id": command.id, "ok": True, **outcome}

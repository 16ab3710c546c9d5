"""Downlink commands: bounded intake, verify (signature, node, expiry, replay), run, answer on `event`.

Anyone who can publish to the node's downlink topics can send junk. The intake is sized so junk
costs little: messages over `MAX_DOWNLINK_BYTES` are refused before any parsing, at most
`queue_depth` wait for verification (more are dropped and counted), and rejections are reported
through a `Tally`: the first of each kind at once (one log line, one alert), then one summary with
the count per interval. Every attacker-controlled value that is echoed (topic, reason, id) is cut
to a short prefix with its length and hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog

from gateway.cloud import CloudSink
from gateway.errors import GatewayError
from gateway.ratelimit import Tally, echo
from gateway.status import CommandStats
from gateway.tasks import cancel_and_wait
from gateway.uplink.commands import MAX_DOWNLINK_BYTES, Command, CommandRejected, CommandVerifier

log = structlog.get_logger(__name__)

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]

# Downlink messages waiting for verification; a flood beyond this is dropped (and counted).
DOWNLINK_QUEUE_DEPTH: Final = 64
ALERT_INTERVAL_S: Final = 60.0
REASON_MAX_CHARS: Final = 160
# A command still running after this is abandoned, so the ones behind it are not held up for good.
COMMAND_TIMEOUT_S: Final = 30.0


class CommandFailed(Exception):
    """A verified command that could not be carried out; the message goes back in the result."""


class CommandDispatcher:
    """Runs verified commands by name; a rejected command changes nothing and is reported, aggregated."""

    def __init__(
        self,
        verifier: CommandVerifier,
        sink: CloudSink,
        *,
        queue_depth: int = DOWNLINK_QUEUE_DEPTH,
        max_bytes: int = MAX_DOWNLINK_BYTES,
        alert_interval_s: float = ALERT_INTERVAL_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self._verifier = verifier
        self._sink = sink
        self._handlers: dict[str, Handler] = {}
        self.max_bytes = max_bytes
        self.command_timeout_s = command_timeout_s
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.alerts_sent = 0
        # Rejections reported as they happened; the rest went into per-interval summaries.
        self.reported_at_once = 0
        self.tally = Tally(self._report, interval_s=alert_interval_s)
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=queue_depth)
        self._alerts: list[dict[str, Any]] = []
        self._alert_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def register(self, name: str, handler: Handler) -> None:
        self._handlers[name] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    def stats(self) -> CommandStats:
        return CommandStats(
            accepted=self.accepted,
            rejected=dict(self.rejected),
            queued=self._queue.qsize(),
            alerts_sent=self.alerts_sent,
            alerts_suppressed=sum(self.rejected.values()) - self.reported_at_once,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start verifying queued messages and sending (aggregated) rejection alerts."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name="downlink-commands"),
                asyncio.create_task(self._send_alerts(), name="downlink-alerts"),
            ]

    async def close(self) -> None:
        """Stop; rejections still counted in this interval go up as a last summary."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        self.tally.flush(force=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._flush_alerts()

    # ------------------------------------------------------------------ intake

    async def on_message(self, topic: str, payload: bytes) -> None:
        """The MQTT link's callback for `edge/{node}/down/#`: queue it (or refuse it) and return."""
        self.offer(topic, payload)

    def offer(self, topic: str, payload: bytes) -> bool:
        """Queue one downlink message for verification; False (counted, reported) if refused."""
        if len(payload) > self.max_bytes:
            self._reject("oversize", topic, f"{len(payload)} bytes, limit {self.max_bytes}", None)
            return False
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self._reject("queue_full", topic, f"{self._queue.maxsize} messages already wait", None)
            return False
        return True

    def count_dropped(self, kind: str, topic: str, reason: str) -> None:
        """A message the link dropped before it reached us (retained, its own queue full)."""
        self._reject(kind, topic, reason, None)

    async def _work(self) -> None:
        # One at a time: the replay check and the effect of a command are ordered.
        while True:
            topic, payload = await self._queue.get()
            try:
                async with asyncio.timeout(self.command_timeout_s):
                    await self._handle(topic, payload)
            except TimeoutError:
                log.error("downlink_command_timed_out", topic=echo(topic), timeout_s=self.command_timeout_s)
            except Exception:
                log.exception("downlink_handler_failed", topic=echo(topic))

    async def _handle(self, topic: str, payload: bytes) -> None:
        try:
            command = await asyncio.to_thread(self._verifier.verify, payload)
        except CommandRejected as err:
            self._reject(err.kind, topic, err.reason, err.command_id)
            return
        topic_name = topic.rsplit("/", 1)[-1]
        if topic_name != command.type:
            log.warning("command_topic_mismatch", topic=echo(topic), type=echo(command.type))
        self.accepted += 1
        result = await self._run(command)
        await self._sink.send("event", "command_result", result)

    # ------------------------------------------------------------------ reporting

    def _reject(self, kind: str, topic: str, reason: str, command_id: str | None) -> None:
        self.rejected[kind] = self.rejected.get(kind, 0) + 1
        self.tally.record(
            kind,
            topic=echo(topic),
            reason=echo(reason, REASON_MAX_CHARS),
            id=echo(command_id) if command_id is not None else None,
        )

    def _report(self, kind: str, count: int, fields: dict[str, Any], first: bool) -> None:
        """First rejection of a kind in an interval, or the count of those that followed it."""
        body: dict[str, Any] = {"severity": "blue", "kind": kind, "count": count, **fields}
        if first:
            self.reported_at_once += 1
            log.warning("command_rejected", **body)
        else:
            body["interval_s"] = self.tally.interval_s
            log.warning("command_rejected", summary=True, **body)
        self._alerts.append(body)
        self._alert_ready.set()

    async def _send_alerts(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tally.interval_s / 4):
                    await self._alert_ready.wait()
            self.tally.flush()
            await self._flush_alerts()

    async def _flush_alerts(self) -> None:
        self._alert_ready.clear()
        while self._alerts:
            body = self._alerts.pop(0)
            try:
                await self._sink.send("alert", "command_rejected", body)
                self.alerts_sent += 1
            except Exception as err:
                log.warning("alert_not_queued", kind="command_rejected", error=echo(err, REASON_MAX_CHARS))

    # ------------------------------------------------------------------ running

    async def _run(self, command: Command) -> dict[str, Any]:
        handler = self._handlers.get(command.type)
        started = time.monotonic()
        if handler is None:
            return {"id": command.id, "ok": False, "error": f"unknown command {echo(command.type)!r}"}
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
